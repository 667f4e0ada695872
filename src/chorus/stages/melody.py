"""The melody stage: notes and the melody line of every track (and of its score, where the demo
rendered it from one), incremental by content hash and sharded over the Dask cluster of the
features; the melody index built from the audio's melodies; and the humming queries that judge
it (docs/pipeline.md, "Find a song by its tune")."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chorus.config import ChorusSettings, stable_hash
from chorus.datasets.candidates import DEMO_STAMP
from chorus.datasets.demo import MANIFEST_NAME
from chorus.io import output_is_current, read_table, write_json_atomic, write_parquet
from chorus.melody.align import ALIGNMENT_VERSION
from chorus.melody.extract import NOTES_COLUMNS, ScoreSource, ShardMelodies, transcribe_shard
from chorus.melody.index import MelodyIndex, melodies_from_table
from chorus.melody.judge import judge
from chorus.melody.line import LINE_RULE
from chorus.melody.transcribe import TRANSCRIBER_VERSION
from chorus.stages.context import StageContext, StageSummary, shared_validator, update_metrics
from chorus.stages.inputs import corpus_location, load_tracks
from chorus.state import StateDir

NO_MELODY = "no melody found"
NOTES_FILE, MELODIES_FILE, QUARANTINE_FILE, JUDGED_FILE = "notes.parquet", "melodies.parquet", "quarantine.parquet", "melody.json"


def score_sources(settings: ChorusSettings, tracks: pd.DataFrame) -> dict[str, ScoreSource]:
    """The score of each track rendered by the demo (by content hash in its manifest); none for
    another corpus."""
    corpus, _ = corpus_location(settings)
    manifest = corpus / MANIFEST_NAME
    if not (corpus / DEMO_STAMP).exists() or not manifest.exists():
        return {}
    rows = pd.read_csv(manifest, usecols=["sha256", "style", "mood", "work"]).drop_duplicates("sha256").set_index("sha256")
    demo = settings.demo
    return {t: ScoreSource(str(rows.at[h, "style"]), str(rows.at[h, "work"]), str(rows.at[h, "mood"]), demo.measures,
                           demo.clip_seconds)
            for t, h in zip(tracks["track_id"], tracks["sha256"], strict=True) if h in rows.index}


def track_keys(settings: ChorusSettings, tracks: pd.DataFrame, scores: dict[str, ScoreSource]) -> dict[str, str]:
    """What each track's notes depend on: its audio, the transcriber, the melody rule, its score."""
    common = [TRANSCRIBER_VERSION, LINE_RULE, settings.melody.min_amplitude]
    return {t: stable_hash([h, *common, scores[t].__dict__ if t in scores else None])
            for t, h in zip(tracks["track_id"], tracks["sha256"], strict=True)}


def _shards(todo: pd.DataFrame, size: int) -> list[list[tuple[str, str]]]:
    pairs = list(zip(todo["track_id"], todo["uri"], strict=True))
    return [pairs[i:i + size] for i in range(0, len(pairs), size)]


def _transcribe(settings: ChorusSettings, todo: pd.DataFrame, scores: dict[str, ScoreSource]) -> list[ShardMelodies]:
    """The shards of ``todo`` on the features' Dask cluster (a local one unless
    ``compute.address``), one task per ``melody.shard_tracks`` tracks."""
    from chorus.compute import dask_client

    shards = _shards(todo, settings.melody.shard_tracks)
    if not shards:
        return []
    with dask_client(settings.compute) as client:
        futures = [client.submit(transcribe_shard, shard, {t: scores[t] for t, _ in shard if t in scores},
                                 settings.melody.min_amplitude, pure=False) for shard in shards]
        return list(client.gather(futures))


def _stored(path: Path, keys: dict[str, str]) -> pd.DataFrame:
    """The rows of a stored table whose track still has the key they were made with."""
    if not path.exists():
        return pd.DataFrame(columns=[*NOTES_COLUMNS, "key"])
    table = read_table(path)
    return table[table["track_id"].map(keys).eq(table["key"])]


def melody_stage(settings: ChorusSettings) -> StageSummary:
    """Transcribe the tracks whose notes are missing or stale, keep the rest, quarantine the
    tracks with no melody (fewer than ``melody.min_notes`` notes), build the melody index and
    judge it with humming queries."""
    ctx = StageContext.open(settings, stage="melody")
    state, ms = ctx.state, settings.melody
    tracks = load_tracks(settings)
    scores = score_sources(settings, tracks)
    keys = track_keys(settings, tracks, scores)
    folder = state.melody
    notes, melodies = _stored(folder / NOTES_FILE, keys), _stored(folder / MELODIES_FILE, keys)
    stored_problems = _stored_problems(folder / QUARANTINE_FILE, keys)
    known = set(melodies["track_id"]) | set(stored_problems)
    todo = tracks[~tracks["track_id"].isin(known)]
    started = time.perf_counter()
    results = _transcribe(settings, todo, scores)
    problems = dict(stored_problems)
    for result in results:
        notes = pd.concat([notes, result.notes.assign(key=result.notes["track_id"].map(keys))], ignore_index=True)
        melodies = pd.concat([melodies, result.melodies.assign(key=result.melodies["track_id"].map(keys))],
                             ignore_index=True)
        problems.update(result.problems)
    transcribe_s = time.perf_counter() - started
    audio_melodies = melodies[melodies["source"] == "audio"]
    length = audio_melodies.groupby("track_id").size().reindex(tracks["track_id"], fill_value=0)
    for track, n in length.items():
        if n < ms.min_notes and track not in problems:
            problems[str(track)] = f"{NO_MELODY}: {n} melody notes (< melody.min_notes={ms.min_notes})"
    if results:  # the stored rows passed when they were written
        validator = shared_validator(settings)
        for table, name in ((notes, "notes"), (melodies, "melodies")):
            validator.validate(table.drop(columns="key"), "melody_notes", update_docs=name == "melodies")
    tables_key = stable_hash([sorted(keys.items()), ms.min_notes])
    if not all(output_is_current(folder / name, tables_key) for name in (NOTES_FILE, MELODIES_FILE, QUARANTINE_FILE)):
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"key": tables_key, "transcriber": TRANSCRIBER_VERSION, "rule": LINE_RULE}
        write_parquet(notes, folder / NOTES_FILE, meta)
        write_parquet(melodies, folder / MELODIES_FILE, meta)
        quarantine = pd.DataFrame({"track_id": list(problems), "reason": list(problems.values())}, dtype=str)
        quarantine["key"] = quarantine["track_id"].str.split("#").str[0].map(keys)
        write_parquet(quarantine, folder / QUARANTINE_FILE, meta)
    indexed = melodies_from_table(audio_melodies[~audio_melodies["track_id"].isin(problems)])
    index_key = stable_hash([sorted(keys[t] for t in indexed), ms.config_hash()])
    index_meta = _read_json(state.melody_index / "melody.json")
    index = MelodyIndex(indexed, ms)
    if index_meta.get("key") != index_key:
        index.save(state.melody_index, {"key": index_key, "transcriber": TRANSCRIBER_VERSION, "rule": LINE_RULE,
                                        "alignment": ALIGNMENT_VERSION})
    counts: dict[str, Any] = {"tracks": len(tracks), "transcribed": int(len(todo)), "reused": int(len(tracks) - len(todo)),
                              "indexed": len(indexed), "quarantined": sum("#" not in t for t in problems),
                              "scores": len(scores), "transcribe_s": round(transcribe_s, 1)}
    judged_path = state.reports / JUDGED_FILE
    judged_key = stable_hash([index_key, ms.config_hash(), ALIGNMENT_VERSION])
    if len(indexed) >= 2:
        previous = _read_json(judged_path)
        if previous.get("key") != judged_key:
            report = judge(ms, tracks, index, melodies, notes, _relevance(tracks, scores), state.melody / "queries",
                           _chroma_catalogue(tracks[tracks["track_id"].isin(indexed)]))
            write_json_atomic(judged_path, {"key": judged_key, **report})
            update_metrics(state.metrics, "melody", report)
        counts["judged"] = _read_json(judged_path).get("levels", {})
    skipped = todo.empty and index_meta.get("key") == index_key
    return ctx.summary("melody", skipped, {"notes": str(folder / NOTES_FILE), "melodies": str(folder / MELODIES_FILE),
                                           "quarantine": str(folder / QUARANTINE_FILE), "index": str(state.melody_index),
                                           "report": str(judged_path)}, counts)


def _stored_problems(path: Path, keys: dict[str, str]) -> dict[str, str]:
    if not path.exists():
        return {}
    table = read_table(path)
    table = table[~table["reason"].str.startswith(NO_MELODY)]  # recounted every run (melody.min_notes)
    current = table[table["track_id"].str.split("#").str[0].map(keys).eq(table["key"])]
    return dict(zip(current["track_id"], current["reason"], strict=True))


def _read_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text()) if path.exists() else {}


def load_melody_index(settings: ChorusSettings) -> MelodyIndex:
    """The melody index the last melody stage built."""
    from chorus.errors import InputError

    folder = StateDir(settings.state_dir).melody_index
    if not (folder / "melody.json").exists():
        raise InputError(str(folder), "no melody index", "run `chorus melody` (or `chorus run`) first")
    return MelodyIndex.load(folder)


def _relevance(tracks: pd.DataFrame, scores: dict[str, ScoreSource]) -> dict[str, str]:
    """Which tracks carry the same tune: renderings of one work (and excerpt) alike; a track
    without a score is its own tune."""
    return {t: f"{scores[t].work}@{scores[t].measures}" if t in scores else t for t in tracks["track_id"]}


def _chroma_catalogue(tracks: pd.DataFrame) -> dict[str, np.ndarray]:
    """Chroma of every indexed track's audio, for the chroma + DTW baseline."""
    from chorus.audio import load_mono
    from chorus.evaluation.melody import chroma
    from chorus.melody.transcribe import SAMPLE_RATE

    return {t: chroma(load_mono(uri, SAMPLE_RATE), SAMPLE_RATE) for t, uri in zip(tracks["track_id"], tracks["uri"],
                                                                                   strict=True)}


def hum_stage(settings: ChorusSettings, query: str, k: int | None = None, out: str | None = None) -> StageSummary:
    """The catalogue tracks whose melody contains the tune sung, hummed or whistled in the audio
    file ``query``, best first, with where in each track's melody the query starts; to Parquet
    (default ``<state>/search/results/hum-<digest>.parquet``)."""
    from chorus.audio import AudioProblem, load_mono
    from chorus.errors import InputError
    from chorus.io import file_sha256
    from chorus.melody.line import Melody, melody_line
    from chorus.melody.transcribe import SAMPLE_RATE, NoteTranscriber

    ctx = StageContext.open(settings, stage="hum")
    k = k or settings.melody.k
    chosen = ctx.output_file(out) if out else None
    path = Path(query).expanduser()
    if not path.is_file():
        raise InputError(query, "no such audio file")
    try:
        audio = load_mono(path, SAMPLE_RATE)
    except AudioProblem as problem:
        raise InputError(query, f"cannot be decoded ({problem.reason})") from None
    index = load_melody_index(settings)
    started = time.perf_counter()
    sung = Melody.from_notes(melody_line(NoteTranscriber.shared().notes(audio), settings.melody.min_amplitude))
    if len(sung) < 3:
        raise InputError(query, f"no tune found: {len(sung)} notes transcribed (a query needs at least 3)")
    matches = index.search(sung, k=k)
    seconds = time.perf_counter() - started
    tracks = load_tracks(settings).set_index("track_id")
    hits = pd.DataFrame({"query": str(path), "rank": range(1, len(matches) + 1), "track_id": [m.track_id for m in matches],
                         "cost": [round(m.cost, 4) for m in matches], "offset_s": [round(m.offset_s, 2) for m in matches],
                         "uri": [str(tracks["uri"].get(m.track_id, "")) for m in matches]})
    target = chosen or ctx.state.search_results / f"hum-{stable_hash([file_sha256(path), index.track_ids, k])}.parquet"
    write_parquet(hits, target)
    return ctx.summary("hum", False, {"results": str(target)},
                       {"query": str(path), "notes": len(sung), "k": k, "catalogue": len(index),
                        "seconds": round(seconds, 3), "matches": hits.drop(columns="query").to_dict("records")})
