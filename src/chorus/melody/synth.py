"""Hummed and whistled queries rendered from a melody: what a listener who knows a tune but not
its name would sing, with the ways a singer departs from the score.

A query is an excerpt of 8-20 s (shorter where the melody is) from any point of a catalogue
melody, transposed, at another tempo, with wrong notes (+-1-2 semitones), dropped and inserted
notes and a slow pitch drift, sung by a harmonic voice with vibrato and breath noise. Each
``Distortion`` level names how much of each."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from chorus.melody.line import Melody

SAMPLE_RATE = 22050


@dataclass(frozen=True)
class Distortion:
    """How a singer departs from the melody: transposition range (semitones), tempo factor range,
    share of wrong, dropped and inserted notes, pitch drift (cents, a random walk's end) and
    whether the voice whistles (a near-sine) or hums (a harmonic source)."""

    name: str
    transpose: tuple[int, int] = (-7, 7)
    tempo: tuple[float, float] = (0.75, 1.3)
    wrong: float = 0.0
    dropped: float = 0.0
    inserted: float = 0.0
    drift_cents: float = 0.0
    whistle: bool = False

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


LEVELS = {
    "clean": Distortion("clean"),
    "wrong10": Distortion("wrong10", wrong=0.10, drift_cents=30.0),
    "sloppy": Distortion("sloppy", wrong=0.10, dropped=0.05, inserted=0.05, drift_cents=30.0, whistle=True),
}


@dataclass(frozen=True)
class Query:
    """A rendered query: its audio (22,050 Hz mono) and what it was made from."""

    audio: np.ndarray
    track_id: str
    start_note: int
    start_s: float
    notes: int
    transpose: int
    tempo: float
    level: str


def random_tune(rng: np.random.Generator, notes: int = 40, low: int = 48, high: int = 84) -> Melody:
    """A synthetic tune (the benchmark's catalogue): steps of 1-5 or 7 semitones, up or down
    alike, reflected at the edges of MIDI ``low``-``high`` (a melody line has no repeated
    pitches: ``merge_repeats`` joins them), notes of 1, 2 or 3 units of 0.25 s."""
    steps = rng.choice([1, 2, 3, 4, 5, 7], notes - 1) * rng.choice([-1, 1], notes - 1)
    pitch = np.empty(notes)
    pitch[0] = rng.integers(low + 12, high - 11)
    for i, step in enumerate(steps, start=1):
        up = pitch[i - 1] + step
        pitch[i] = up if low <= up <= high else pitch[i - 1] - step
    lengths = rng.choice([0.25, 0.5, 0.75], notes, p=[0.5, 0.35, 0.15])
    return Melody(np.r_[0, np.cumsum(lengths[:-1])], lengths, pitch)


def sung_melody(melody: Melody, start: int, stop: int, level: Distortion, rng: np.random.Generator) -> tuple[Melody, int, float]:
    """The notes the singer sings of ``melody[start:stop]``: transposed, re-timed (starting at
    0.3 s), with wrong, dropped and inserted notes and drift; and the transposition and tempo."""
    part = melody.excerpt(start, stop)
    transpose = int(rng.integers(level.transpose[0], level.transpose[1] + 1))
    tempo = float(rng.uniform(*level.tempo))
    onsets = (part.onset_s - part.onset_s[0]) / tempo + 0.3
    durations = np.maximum(part.duration_s / tempo, 0.08)
    pitch = part.pitch + transpose
    wrong = rng.random(len(pitch)) < level.wrong
    pitch = pitch + wrong * rng.choice([-2, -1, 1, 2], len(pitch))
    keep = rng.random(len(pitch)) >= level.dropped
    keep[0] = True
    onsets, durations, pitch = onsets[keep], durations[keep], pitch[keep]
    inserted = np.flatnonzero(rng.random(len(pitch) - 1) < level.inserted) if len(pitch) > 1 else np.zeros(0, int)
    for i in inserted[::-1]:  # a passing note in the second half of note i
        half = durations[i] / 2
        durations[i] = half
        onsets = np.insert(onsets, i + 1, onsets[i] + half)
        durations = np.insert(durations, i + 1, half)
        pitch = np.insert(pitch, i + 1, pitch[i] + rng.choice([-2, -1, 1, 2]))
    drift = np.cumsum(rng.normal(0, 1, len(pitch)))
    if len(drift) and np.abs(drift).max() > 0:
        drift = drift / np.abs(drift).max() * level.drift_cents / 100
    return Melody(onsets, durations, pitch + drift), transpose, tempo


def render_voice(melody: Melody, rng: np.random.Generator, whistle: bool = False,
                 sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A voice singing ``melody``: per note a harmonic source (hum: 8 partials falling 1/k^1.5;
    whistle: a sine) at the note's pitch with 5.5 Hz vibrato of +-30 cents, 30 ms attack and
    60 ms release, glides between notes, and breath noise at -30 dB. Mono float32, peak 0.5."""
    total = float(melody.onset_s[-1] + melody.duration_s[-1] + 0.3) if len(melody) else 0.5
    n = int(total * sample_rate)
    t = np.arange(n) / sample_rate
    midi = np.full(n, np.nan)
    envelope = np.zeros(n)
    for onset, duration, pitch in zip(melody.onset_s, melody.duration_s, melody.pitch, strict=True):
        a, b = int(onset * sample_rate), min(int((onset + duration) * sample_rate), n)
        if b <= a:
            continue
        midi[a:b] = pitch
        ramp = np.ones(b - a)
        attack, release = min(int(0.03 * sample_rate), b - a), min(int(0.06 * sample_rate), b - a)
        ramp[:attack] = np.linspace(0, 1, attack)
        ramp[len(ramp) - release:] *= np.linspace(1, 0, release)
        envelope[a:b] = np.maximum(envelope[a:b], ramp)
    known = ~np.isnan(midi)
    if not known.any():
        return np.zeros(n, np.float32)
    midi = np.interp(t, t[known], midi[known])  # glide through rests
    midi = np.convolve(midi, np.ones(441) / 441, mode="same")  # 20 ms portamento
    vibrato = 0.3 * np.sin(2 * np.pi * 5.5 * t + rng.uniform(0, 2 * np.pi))
    frequency = 440.0 * 2 ** ((midi + vibrato - 69) / 12)
    phase = 2 * np.pi * np.cumsum(frequency) / sample_rate
    partials = [1] if whistle else list(range(1, 9))
    voice = sum((k ** -1.5) * np.sin(k * phase) for k in partials if k * frequency.max() < sample_rate / 2)
    breath = rng.normal(0, 1, n) * 10 ** (-30 / 20)
    audio = np.asarray(voice) * envelope + breath * (0.3 + envelope)
    return (0.5 * audio / max(float(np.abs(audio).max()), 1e-9)).astype(np.float32)


def hum_query(melody: Melody, track_id: str, level: Distortion, rng: np.random.Generator,
              seconds: tuple[float, float] = (8.0, 20.0), min_notes: int = 8) -> Query | None:
    """A query of ``level`` from a random point of ``melody``: 8-20 s of it (all of a shorter
    melody, when it has at least ``min_notes`` notes); None when the melody is too short."""
    if len(melody) < min_notes:
        return None
    length = rng.uniform(*seconds)
    ends = melody.onset_s + melody.duration_s
    last_start = max(0, int(np.searchsorted(melody.onset_s, ends[-1] - length, side="right")) - 1)
    last_start = min(last_start, len(melody) - min_notes)
    start = int(rng.integers(0, last_start + 1))
    stop = max(int(np.searchsorted(melody.onset_s, melody.onset_s[start] + length, side="left")), start + min_notes)
    sung, transpose, tempo = sung_melody(melody, start, min(stop, len(melody)), level, rng)
    audio = render_voice(sung, rng, level.whistle)
    return Query(audio, track_id, start, float(melody.onset_s[start]), len(sung), transpose, tempo, level.name)
