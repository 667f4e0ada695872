"""The melody line of a transcription, and the key- and tempo-free form it is matched in.

The melody is the highest salient voice (the skyline rule): notes quieter than
``min_amplitude`` are dropped; a note that lies a harmonic partial above a note sounding with it
(harmonics 2-8: 12, 19, 24, 28, 31, 34 or 36 semitones) and is at most ``PARTIAL_MARGIN`` times
as strong is taken as that note's overtone, which a transcriber of organ, strings and reeds
reports as a note; then a note is kept only if no kept note of higher pitch is sounding when it
starts and goes on sounding for more than ``LEGATO_S`` after (the skyline at onsets: a note
held over into the next, as legato playing and a transcriber's late offsets do, does not cover
it); of notes starting together the highest stays; repeated notes are merged
(``merge_repeats``). This is what a listener hums of a chorale or a song with accompaniment (the
soprano, the vocal line); it misreads a melody that lies below its accompaniment.

A catalogue track's line then keeps only its upper voice (``upper_voice``): where the transcriber
missed a note of the top part, the skyline drops to an inner voice for that note, which costs the
alignment two wrong intervals; a note more than ``UPPER_DEPTH`` semitones below the highest line
note within ``UPPER_WINDOW_S`` of it is taken for such a note and left out (a gap costs one skip).
A sung query is one voice and keeps every note: a singer's leap down stays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

PARTIALS = (12, 19, 24, 28, 31, 34, 36)  # semitones above a fundamental of its 2nd to 8th harmonics
PARTIAL_MARGIN = 1.5  # an organ's or a string section's octave partial is transcribed louder than its fundamental
LEGATO_S = 0.1  # a higher note ending within this of another's onset is held over, not sounding above it
UPPER_WINDOW_S, UPPER_DEPTH = 0.75, 7.0  # a catalogue line's note this far below its neighbours' top is an inner voice
LINE_RULE = {"rule": "skyline-partials-repeats-upper", "partials": PARTIALS, "partial_margin": PARTIAL_MARGIN,
             "legato_s": LEGATO_S, "upper": (UPPER_WINDOW_S, UPPER_DEPTH)}  # what a stored line depends on
MAX_INTERVAL = 12.0  # semitones; larger leaps are folded to this (an octave slip is not a new tune)


@dataclass(frozen=True)
class Melody:
    """A monophonic note sequence: onsets (s), durations (s) and MIDI pitches (may be fractional
    for a sung query), each of shape (n_notes,)."""

    onset_s: np.ndarray
    duration_s: np.ndarray
    pitch: np.ndarray

    def __len__(self) -> int:
        return len(self.pitch)

    @classmethod
    def from_notes(cls, notes: pd.DataFrame) -> Melody:
        return cls(notes["onset_s"].to_numpy(np.float64), (notes["offset_s"] - notes["onset_s"]).to_numpy(np.float64),
                   notes["pitch"].to_numpy(np.float64))

    def intervals(self) -> np.ndarray:
        """Pitch steps between consecutive notes (semitones, clipped to an octave), shape (n - 1,):
        the same for any key the melody is sung in."""
        return np.clip(np.diff(self.pitch), -MAX_INTERVAL, MAX_INTERVAL)

    def log_ioi_ratios(self) -> np.ndarray:
        """log2 of each inter-onset interval over the median one, shape (n - 1,): the same at
        any tempo (0 = a typical note length, +1 = twice as long)."""
        ioi = np.maximum(np.diff(self.onset_s), 1e-3)
        return np.log2(ioi / np.median(ioi)) if len(ioi) else ioi

    def excerpt(self, start: int, stop: int) -> Melody:
        return Melody(self.onset_s[start:stop], self.duration_s[start:stop], self.pitch[start:stop])


def melody_line(notes: pd.DataFrame, min_amplitude: float = 0.35) -> pd.DataFrame:
    """The highest salient voice of polyphonic ``notes`` (columns onset_s, offset_s, pitch,
    amplitude), as a monophonic note table (a later note cuts the one before it short)."""
    salient = notes[notes["amplitude"] >= min_amplitude].sort_values(["onset_s", "pitch"], ascending=[True, False])
    if salient.empty:
        return salient.reset_index(drop=True)
    onset, offset = salient["onset_s"].to_numpy(), salient["offset_s"].to_numpy()
    pitch, amplitude = salient["pitch"].to_numpy(), salient["amplitude"].to_numpy()
    span = offset - onset
    overlap = np.clip(np.minimum.outer(offset, offset) - np.maximum.outer(onset, onset), 0, None)  # (n, n)
    below = np.isin(np.subtract.outer(pitch, pitch), PARTIALS) & (PARTIAL_MARGIN * amplitude[None, :] >= amplitude[:, None])
    keep = ~((below & (overlap > 0.5 * span[:, None])).any(axis=1))  # a partial of a note below
    for i in np.argsort(-pitch, kind="stable"):  # highest first: what covers a note is decided before it
        if keep[i]:
            sounding = keep & (pitch > pitch[i]) & (onset <= onset[i] + 0.03) & (offset > onset[i] + LEGATO_S)
            keep[i] = not sounding.any()
    line = salient[keep].drop_duplicates("onset_s", keep="first").sort_values("onset_s").reset_index(drop=True)
    # monophonic: each note ends at the latest when the next begins
    ends = np.minimum(line["offset_s"].to_numpy(), np.r_[line["onset_s"].to_numpy()[1:], np.inf])
    return merge_repeats(line.assign(offset_s=ends))


def catalogue_line(notes: pd.DataFrame, min_amplitude: float = 0.35) -> pd.DataFrame:
    """A catalogue track's melody line: ``upper_voice`` of ``melody_line`` (a sung query's is
    ``melody_line`` alone)."""
    return upper_voice(melody_line(notes, min_amplitude))


def upper_voice(line: pd.DataFrame, window_s: float = UPPER_WINDOW_S, depth: float = UPPER_DEPTH) -> pd.DataFrame:
    """The notes of a melody line (``melody_line``'s table) no more than ``depth`` semitones
    below the highest line note starting within ``window_s`` of them, each ending at the latest
    when the next kept one begins; repeats merged again."""
    if len(line) < 3:
        return line
    onset, pitch = line["onset_s"].to_numpy(), line["pitch"].to_numpy()
    near = np.abs(np.subtract.outer(onset, onset)) <= window_s  # (n, n)
    top = np.where(near, pitch[None, :], -np.inf).max(axis=1)
    kept = line[pitch >= top - depth].reset_index(drop=True)
    ends = np.minimum(kept["offset_s"].to_numpy(), np.r_[kept["onset_s"].to_numpy()[1:], np.inf])
    return merge_repeats(kept.assign(offset_s=ends))


def merge_repeats(line: pd.DataFrame, gap_s: float = 0.1) -> pd.DataFrame:
    """Consecutive notes of one pitch with less than ``gap_s`` between them as one note: a
    transcriber splits a sung note at its vibrato, and a singer slurs what a score repeats, so
    neither side of a match keeps repeated notes."""
    if len(line) < 2:
        return line
    pitch, onset, offset = line["pitch"].to_numpy(), line["onset_s"].to_numpy(), line["offset_s"].to_numpy()
    starts = np.r_[True, (pitch[1:] != pitch[:-1]) | (onset[1:] - offset[:-1] > gap_s)]
    group = np.cumsum(starts) - 1
    merged = line[starts].reset_index(drop=True)
    merged["offset_s"] = pd.Series(offset).groupby(group).max().to_numpy()
    return merged
