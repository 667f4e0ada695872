"""Render excerpts of music21's bundled corpus to audio with FluidSynth.

Traps: a reused synthesizer is not deterministic (see Renderer) and reloading a large soundfont
per clip is slow, so chorus uses a small soundfont and a fresh synthesizer per clip; presets are
selected with the loaded soundfont's id explicitly (with the default id every General MIDI program
renders identically); works are cut to a few measures before MIDI export (whole works take
seconds each); some corpus files fail to convert, so callers skip and record them.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# How each latent mood is rendered, so mood is audible: tempo factor, loudness (MIDI velocity),
# register (semitones) and instrument (General MIDI program).
MOOD_RENDERING: dict[str, dict[str, float | int]] = {
    "moving": {"tempo": 0.85, "velocity": 85, "transpose": 0, "program": 48},  # strings
    "loneliness": {"tempo": 0.6, "velocity": 50, "transpose": -3, "program": 68},  # oboe
    "quiet": {"tempo": 0.7, "velocity": 35, "transpose": 0, "program": 0},  # piano
    "warmth": {"tempo": 0.9, "velocity": 65, "transpose": -5, "program": 24},  # nylon guitar
    "romance": {"tempo": 0.8, "velocity": 70, "transpose": 2, "program": 4},  # electric piano
    "healing": {"tempo": 0.75, "velocity": 50, "transpose": 5, "program": 46},  # harp
    "sadness": {"tempo": 0.55, "velocity": 55, "transpose": -12, "program": 42},  # cello
    "missing": {"tempo": 0.7, "velocity": 55, "transpose": -7, "program": 73},  # flute
    "passion": {"tempo": 1.3, "velocity": 110, "transpose": 0, "program": 56},  # trumpet
    "joy": {"tempo": 1.4, "velocity": 95, "transpose": 12, "program": 11},  # vibraphone
    "lovelorn": {"tempo": 0.65, "velocity": 60, "transpose": -8, "program": 65},  # alto sax
    "nostalgia": {"tempo": 0.8, "velocity": 60, "transpose": -2, "program": 19},  # church organ
}

# General MIDI families (program // 8): the demo's instrument label for the backbone's pretext task.
GM_FAMILIES: tuple[str, ...] = (
    "piano", "chromatic percussion", "organ", "guitar", "bass", "strings", "ensemble", "brass",
    "reed", "pipe", "synth lead", "synth pad", "synth effects", "ethnic", "percussive", "sound effects",
)


def instrument_family(mood: str) -> str | None:
    """The GM family a demo track of this planted mood is rendered with."""
    spec = MOOD_RENDERING.get(mood)
    return family_of(int(spec["program"])) if spec else None


def family_of(program: int) -> str:
    return GM_FAMILIES[program // 8]


# The backbone's pretext corpus draws its instrument independently of the rendering's mood: one
# General MIDI program from each of 12 families.
PRETEXT_PROGRAMS: tuple[int, ...] = (0, 11, 19, 24, 33, 42, 48, 56, 65, 73, 81, 89)


_OPUS_STYLES_PATTERN = re.compile(r"^X:\s*(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class Work:
    """One source work: a corpus file and, for multi-tune ABC files, the tune number."""

    style: str
    path: str
    number: int | None = None

    @property
    def label(self) -> str:
        rel = self.path.split("corpus/", 1)[-1]
        return f"{rel}#{self.number}" if self.number is not None else rel


def list_works(style: str) -> list[Work]:
    """Every work music21 bundles for ``style`` (a composer/collection name), in a stable order."""
    from music21 import corpus

    works: list[Work] = []
    for path in sorted(str(p) for p in corpus.getComposer(style)):
        if not path.endswith((".mxl", ".xml", ".musicxml", ".krn", ".abc")):
            continue
        if path.endswith(".abc"):
            text = Path(path).read_text(errors="replace")
            numbers = [int(n) for n in _OPUS_STYLES_PATTERN.findall(text)]
            if len(numbers) > 1:
                works.extend(Work(style, path, n) for n in numbers)
                continue
        works.append(Work(style, path))
    return works


def score_midi(work: Work, measures: int) -> bytes:
    """The first ``measures`` of a work (all of it for 0) as a standard MIDI file."""
    from music21 import converter, midi

    kwargs: dict[str, Any] = {"number": work.number} if work.number is not None else {}
    # Never music21's pickle cache: it thaws pickles from a shared scratch folder (/tmp/music21)
    # that any local user can write to.
    score = converter.parse(work.path, forceSource=True, storePickle=False, **kwargs)
    excerpt = score.measures(1, measures) if measures else score
    return midi.translate.music21ObjectToMidiFile(excerpt).writestr()


def work_by_label(style: str, label: str) -> Work:
    """The work a manifest's ``work`` column names (``Work.label``)."""
    for work in list_works(style):
        if work.label == label:
            return work
    raise KeyError(f"music21 bundles no work {label!r} for style {style!r}")


def _at_mood_tempo(midi: bytes, mood: str) -> tuple[Any, dict[str, Any]]:
    """The MIDI file at the mood's tempo, and the mood's rendering settings."""
    import pretty_midi

    spec = MOOD_RENDERING[mood]
    pm = pretty_midi.PrettyMIDI(io.BytesIO(midi))
    end = pm.get_end_time()
    if end <= 0:
        raise ValueError("no notes")
    pm.adjust_times([0.0, end], [0.0, end / float(spec["tempo"])])
    return pm, spec


def rendered_notes(midi: bytes, mood: str, seconds: float) -> pd.DataFrame:
    """The notes a clip rendered by ``Renderer.render(midi, mood, seconds)`` sounds, on its clock
    (0 = the first note): onset_s, offset_s, pitch (after the mood's transposition), velocity.
    This is the clip's symbolic score."""
    pm, spec = _at_mood_tempo(midi, mood)
    rows = [(n.start, n.end, int(np.clip(n.pitch + int(spec["transpose"]), 21, 108)), n.velocity)
            for inst in pm.instruments if not inst.is_drum for n in inst.notes]
    if not rows:
        raise ValueError("no melodic notes")
    notes = pd.DataFrame(rows, columns=["onset_s", "offset_s", "pitch", "velocity"])
    notes[["onset_s", "offset_s"]] -= notes["onset_s"].min()
    notes = notes[notes["onset_s"] < seconds]
    notes["offset_s"] = notes["offset_s"].clip(upper=seconds)
    return notes.sort_values(["onset_s", "pitch"], kind="stable").reset_index(drop=True)


def default_soundfont() -> Path:
    """pretty_midi's wheel ships TimGM6mb.sf2 (GPL-2): always present, small and fast to load."""
    import pretty_midi

    return Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"


class Renderer:
    """Renders clips with FluidSynth from one soundfont.

    Each clip gets a fresh synthesizer: a reused one carries state from the previous clip (LFO
    phases, voice tails; even ``system_reset`` leaves large differences), so a clip's samples
    would depend on which clip its worker rendered before. The default TimGM6mb soundfont loads
    quickly; the worker process (not the clip) stays the unit of reuse for everything else.
    """

    def __init__(self, soundfont: Path, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.soundfont = Path(soundfont)
        synth, _ = self._new_synth()  # fail early on a bad soundfont
        synth.delete()

    def _new_synth(self) -> tuple[Any, int]:
        import fluidsynth

        # Reverb and chorus off: faster, and nothing rings across note boundaries.
        synth = fluidsynth.Synth(gain=0.4, samplerate=float(self.sample_rate))
        synth.setting("synth.reverb.active", 0)
        synth.setting("synth.chorus.active", 0)
        sfid = synth.sfload(str(self.soundfont))
        if sfid < 0:
            synth.delete()
            raise RuntimeError(f"{self.soundfont}: FluidSynth could not load the soundfont")
        return synth, sfid

    def midi_from_work(self, work: Work, measures: int) -> bytes:
        return score_midi(work, measures)

    def render(self, midi: bytes, mood: str, seconds: float, program: int | None = None) -> np.ndarray:
        """Render with the mood's tempo, loudness, register and instrument (``program`` replaces
        the mood's instrument); mono float32."""
        pm, spec = _at_mood_tempo(midi, mood)
        events: list[tuple[float, int, int, int, int]] = []  # time, on(1)/off(0), chan, key, vel
        melodic = [inst for inst in pm.instruments if not inst.is_drum]
        for index, inst in enumerate(melodic):
            channel = index % 15
            channel = channel + 1 if channel >= 9 else channel  # channel 9 is percussion
            for note in inst.notes:
                key = int(np.clip(note.pitch + int(spec["transpose"]), 21, 108))
                vel = int(np.clip(spec["velocity"] + (note.velocity - 90) // 8, 1, 127))
                events.append((note.start, 1, channel, key, vel))
                events.append((note.end, 0, channel, key, 0))
        if not events:
            raise ValueError("no melodic notes")
        events.sort(key=lambda e: (e[0], e[1]))
        synth, sfid = self._new_synth()
        try:
            return self._play(synth, sfid, events, int(spec["program"] if program is None else program), seconds)
        finally:
            synth.delete()

    def _play(self, synth: Any, sfid: int, events: list[tuple[float, int, int, int, int]], program: int,
              seconds: float) -> np.ndarray:
        first = events[0][0]
        channels = {e[2] for e in events}
        for channel in channels:
            # The loaded soundfont's id explicitly: with the default id every program sounded alike.
            synth.program_select(channel, sfid, 0, program)
        chunks: list[np.ndarray] = []
        now = first
        limit = first + seconds
        for time, on, channel, key, vel in events:
            if time > limit:
                break
            frames = int(round((time - now) * self.sample_rate))
            if frames > 0:
                chunks.append(synth.get_samples(frames))
                now += frames / self.sample_rate
            if on:
                synth.noteon(channel, key, vel)
            else:
                synth.noteoff(channel, key)
        remaining = int(round((limit - now) * self.sample_rate))
        if remaining > 0:
            chunks.append(synth.get_samples(remaining))
        stereo = np.concatenate(chunks).astype(np.float32).reshape(-1, 2) / 32768.0
        mono = stereo.mean(axis=1)
        # Trim the silent tail (a short work ends before the clip does).
        loud = np.flatnonzero(np.abs(mono) > 1e-4)
        return mono[: loud[-1] + 1] if loud.size else mono[:0]
