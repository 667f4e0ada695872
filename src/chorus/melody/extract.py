"""A shard of tracks to notes and melodies: audio decoded and transcribed, the melody line taken,
and, where a track was rendered from a score (the demo's music21 works), the score's notes and
melody beside them. Runs on a Dask worker; returns tables, never raises for one bad file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from chorus.audio import AudioProblem, load_mono
from chorus.melody.line import catalogue_line, melody_line
from chorus.melody.transcribe import SAMPLE_RATE, NoteTranscriber

NOTES_COLUMNS = ["track_id", "source", "note", "onset_s", "offset_s", "pitch", "amplitude"]
MELODY_SOURCES = ("audio", "score")


@dataclass(frozen=True)
class ScoreSource:
    """Where a rendered track's score is: the music21 work (``Work.label``), its style, the first
    ``measures`` rendered with ``mood``'s tempo and transposition, ``seconds`` long."""

    style: str
    work: str
    mood: str
    measures: int
    seconds: float


@dataclass
class ShardMelodies:
    notes: pd.DataFrame  # NOTES_COLUMNS; source "audio" (polyphonic transcription) or "score"
    melodies: pd.DataFrame  # NOTES_COLUMNS; the melody line of each source
    problems: dict[str, str]  # track_id -> why it has no transcription


def _tagged(notes: pd.DataFrame, track_id: str, source: str) -> pd.DataFrame:
    return notes.assign(track_id=track_id, source=source, note=range(len(notes)))[NOTES_COLUMNS]


def score_notes(source: ScoreSource) -> pd.DataFrame:
    """The notes a demo clip sounds, from its music21 score (amplitude 1)."""
    from chorus.datasets.render import rendered_notes, score_midi, work_by_label

    midi = score_midi(work_by_label(source.style, source.work), source.measures)
    return rendered_notes(midi, source.mood, source.seconds).assign(amplitude=1.0)


def transcribe_shard(tracks: list[tuple[str, str]], scores: dict[str, ScoreSource], min_amplitude: float,
                     wheel_dir: Any = None) -> ShardMelodies:
    """``tracks``: (track_id, audio path). Each track's notes and melody from its audio and, where
    ``scores`` has it, from its score."""
    transcriber = NoteTranscriber.shared(wheel_dir)
    notes, melodies, problems = [], [], {}
    for track_id, path in tracks:
        try:
            found = transcriber.notes(load_mono(path, SAMPLE_RATE))
        except AudioProblem as problem:
            problems[track_id] = f"{problem.reason}: {problem.detail}"
            continue
        except (OSError, ValueError) as error:
            problems[track_id] = f"{type(error).__name__}: {error}"
            continue
        notes.append(_tagged(found, track_id, "audio"))
        melodies.append(_tagged(catalogue_line(found, min_amplitude), track_id, "audio"))
        if track_id in scores:
            try:
                written = score_notes(scores[track_id])
            except Exception as error:  # music21 fails on some corpus files; the audio still counts
                problems[f"{track_id}#score"] = f"score: {type(error).__name__}: {error}"[:300]
                continue
            notes.append(_tagged(written, track_id, "score"))
            melodies.append(_tagged(melody_line(written, 0.0), track_id, "score"))
    empty = pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(NOTES_COLUMNS, ["str", "str", "int64", "float64", "float64",
                                                                                 "int16", "float32"], strict=True)})
    return ShardMelodies(pd.concat(notes, ignore_index=True) if notes else empty,
                         pd.concat(melodies, ignore_index=True) if melodies else empty, problems)
