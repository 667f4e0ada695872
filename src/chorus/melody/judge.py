"""Judging the melody index with humming queries: each query track of the held-out split is sung
at every distortion level from its score's melody (its audio's where it has no score), the sung
audio transcribed and searched; the report gives top-1, top-10 and MRR with intervals per level,
beside a random ranking, the chroma + DTW baseline and the oracle index of the scores' melodies,
and the transcription's accuracy against the scores."""

from __future__ import annotations

import itertools
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf

from chorus.config import MelodySettings
from chorus.evaluation.melody import (
    chroma,
    chroma_ranking,
    note_accuracy,
    random_ranking,
    rank_metrics,
    raw_pitch_accuracy,
)
from chorus.io import atomic_path
from chorus.melody.index import MelodyIndex, melodies_from_table
from chorus.melody.line import Melody, melody_line
from chorus.melody.synth import LEVELS, SAMPLE_RATE, hum_query
from chorus.melody.transcribe import NoteTranscriber
from chorus.metrics.classification import bootstrap_interval


def _rank(order: list[str], query_tune: str, tune_of: dict[str, str]) -> int:
    """0-based rank of the first track of the query's tune in ``order`` (len(order): not found)."""
    return next((i for i, track in enumerate(order) if tune_of.get(track) == query_tune), len(order))


def _query_melodies(tracks: pd.DataFrame, melodies: pd.DataFrame, split: str, indexed: set[str]) -> dict[str, Melody]:
    """Each query track's tune as sung: its score's melody, else its audio's."""
    chosen = set(tracks.loc[tracks["split"] == split, "track_id"]) & indexed
    table = melodies[melodies["track_id"].isin(chosen)]
    score = melodies_from_table(table[table["source"] == "score"])
    audio = melodies_from_table(table[table["source"] == "audio"])
    return {t: score[t] if t in score else audio[t] for t in sorted(chosen) if t in score or t in audio}


def transcription_accuracy(notes: pd.DataFrame, melodies: pd.DataFrame, rounds: int, seed: int) -> dict[str, Any]:
    """Per track with a score: note F-measure of all notes and of the melody line, and the
    melody's raw pitch accuracy (mir_eval), as means over tracks with 95% intervals."""
    rows = []
    for track in sorted(set(notes.loc[notes["source"] == "score", "track_id"])):
        n, m = notes[notes["track_id"] == track], melodies[melodies["track_id"] == track]
        rows.append({"notes_f": note_accuracy(n[n.source == "score"], n[n.source == "audio"])["f_measure"],
                     "melody_f": note_accuracy(m[m.source == "score"], m[m.source == "audio"])["f_measure"],
                     "raw_pitch_accuracy": raw_pitch_accuracy(m[m.source == "score"], m[m.source == "audio"])})
    if not rows:
        return {}
    table = pd.DataFrame(rows)
    out: dict[str, Any] = {"n": len(table)}
    for column in table.columns:
        values = table[column].dropna().to_numpy()
        out[column] = bootstrap_interval(lambda i, v=values: float(v[i].mean()), len(values), rounds, seed)
    return out


def judge(settings: MelodySettings, tracks: pd.DataFrame, index: MelodyIndex, melodies: pd.DataFrame,
          notes: pd.DataFrame, tune_of: dict[str, str], queries_dir: Path,
          chroma_catalogue: dict[str, np.ndarray]) -> dict[str, Any]:
    """The humming table (see the module's docstring); the sung queries are kept as WAV files
    under ``queries_dir/<level>/`` with ``queries.csv`` saying what each was sung from."""
    transcriber = NoteTranscriber.shared()
    indexed = set(index.track_ids)
    sung_from = _query_melodies(tracks, melodies, settings.query_split, indexed)
    scores = melodies_from_table(melodies[(melodies["source"] == "score") & melodies["track_id"].isin(indexed)])
    oracle = MelodyIndex(scores, settings) if len(scores) >= 2 else None
    tunes = pd.Series([tune_of.get(t) for t in index.track_ids])
    levels: dict[str, Any] = {}
    records, transcribe_ms, search_ms = [], [], []
    for level_index, level in enumerate(settings.query_levels):
        ranks: dict[str, list[int]] = {"melody index": [], "chroma + DTW": [], "oracle (score melodies)": []}
        relevant = []
        for (track, melody), take in itertools.product(sung_from.items(), range(settings.queries_per_track)):
            seed = [settings.query_seed, level_index, take, zlib.crc32(track.encode())]
            query = hum_query(melody, track, LEVELS[level], np.random.default_rng(seed), settings.query_seconds,
                              settings.query_notes)
            if query is None:
                continue
            path = queries_dir / level / f"{track}-{take}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                sf.write(str(tmp), query.audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")
            started = time.perf_counter()
            sung = Melody.from_notes(melody_line(transcriber.notes(query.audio), settings.min_amplitude))
            transcribed = time.perf_counter()
            found = index.search(sung, k=len(index))
            search_ms.append(1000 * (time.perf_counter() - transcribed))
            transcribe_ms.append(1000 * (transcribed - started))
            tune = tune_of[track]
            ranks["melody index"].append(_rank([m.track_id for m in found], tune, tune_of))
            ranks["chroma + DTW"].append(_rank(chroma_ranking(chroma(query.audio, SAMPLE_RATE), chroma_catalogue), tune,
                                               tune_of))
            if oracle is not None:
                ranks["oracle (score melodies)"].append(_rank([m.track_id for m in oracle.search(sung, k=len(oracle))],
                                                              tune, tune_of))
            relevant.append(int((tunes == tune).sum()))
            records.append({"level": level, "track_id": track, "file": str(path), "start_s": query.start_s,
                            "notes": query.notes, "transpose": query.transpose, "tempo": round(query.tempo, 3),
                            "rank": ranks["melody index"][-1], "offset_s": found[0].offset_s if found else None})
        if not relevant:
            continue
        levels[level] = {"distortion": LEVELS[level].as_dict(), "queries": len(relevant),
                         **{name: rank_metrics(np.array(r), settings.bootstrap_rounds, settings.query_seed)
                            for name, r in ranks.items() if r},
                         "random": random_ranking(np.array(relevant), len(index))}
    if records:
        pd.DataFrame(records).to_csv(queries_dir / "queries.csv", index=False)
    return {"catalogue": len(index), "query_split": settings.query_split, "levels": levels,
            "transcription": transcription_accuracy(notes, melodies, settings.bootstrap_rounds, settings.query_seed),
            "latency_ms": {"transcribe_median": float(np.median(transcribe_ms)) if transcribe_ms else None,
                           "search_median": float(np.median(search_ms)) if search_ms else None,
                           "search_p95": float(np.percentile(search_ms, 95)) if search_ms else None}}
