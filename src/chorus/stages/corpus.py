"""The corpus stages: the demo corpus, the backbone's rendered pretext corpus, and ingest (probe,
decode and validate the audio into the tracks table; validate and copy the social tables)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from chorus.compute import release_freed_memory
from chorus.config import ChorusSettings
from chorus.datasets.adapters import candidates_for
from chorus.datasets.candidates import DEMO_STAMP
from chorus.datasets.demo import MANIFEST_NAME, generate_demo
from chorus.datasets.pretext import STAMP_NAME, generate_pretext_corpus
from chorus.errors import InputError
from chorus.ingest import (
    drop_forgotten,
    forgotten_users,
    ingest,
    inputs_fingerprint,
    read_social,
    social_key,
)
from chorus.io import output_is_current, read_meta, read_table, write_json_atomic, write_parquet
from chorus.stages.context import StageContext, StageSummary, shared_validator
from chorus.stages.inputs import corpus_location, load_tracks, pretext_settings, social_table_paths
from chorus.validation import Validator

Progress = Callable[[int, int], None] | None  # called with (done, total) as files finish


def demo_stage(settings: ChorusSettings, progress: Progress = None) -> StageSummary:
    ctx = StageContext.open(settings, stage="demo")
    stamp = ctx.state.demo_stamp
    before = json.loads(stamp.read_text()).get("key") if stamp.exists() else None
    corpus = generate_demo(settings.demo, ctx.state.demo, progress=progress)
    return ctx.summary("demo", before == corpus.key,
                       {"manifest": str(corpus.manifest), "social": str(corpus.social_dir)},
                       {"tracks": corpus.tracks, "skipped_works": corpus.skipped_works})


def held_out_works(settings: ChorusSettings) -> set[str]:
    """The music21 works of the main corpus's valid and test tracks, from the demo manifest (by
    content hash). A corpus that is not the demo holds none: its audio is not rendered from
    music21, so no rendering of the pretext corpus can be one of its tracks."""
    tracks = load_tracks(settings)
    corpus, _ = corpus_location(settings)
    manifest = corpus / MANIFEST_NAME
    if not (corpus / DEMO_STAMP).exists() or not manifest.exists():
        return set()
    work_of = pd.read_csv(manifest, usecols=["sha256", "work"]).set_index("sha256")["work"]
    held_out = tracks.loc[tracks["split"] != "train", "sha256"]
    missing = set(held_out) - set(work_of.index)
    if missing:
        raise InputError(str(manifest), f"{len(missing)} held-out tracks are not in the demo manifest; their works "
                                        "cannot be kept out of the pretext corpus", "re-run `chorus ingest`")
    return set(work_of.loc[list(held_out)].astype(str))


def pretext_corpus_stage(settings: ChorusSettings, progress: Progress = None) -> StageSummary:
    """Render the backbone's pretext corpus (after ingest: it leaves out the works the main corpus
    holds out); cached by its key like the demo."""
    ctx = StageContext.open(pretext_settings(settings), stage="pretext-corpus")
    stamp = ctx.state.demo / STAMP_NAME
    before = json.loads(stamp.read_text()).get("key") if stamp.exists() else None
    corpus = generate_pretext_corpus(settings.demo, settings.train.backbone, ctx.state.demo, held_out_works(settings),
                                     progress=progress)
    return ctx.summary("pretext-corpus", before == corpus.key, {"manifest": str(corpus.manifest)},
                       {"tracks": corpus.tracks, "works": corpus.works, "excluded_works": corpus.excluded_works,
                        "skipped_works": corpus.skipped_works})


def ingest_stage(settings: ChorusSettings, progress: Progress = None, validator: Validator | None = None) -> StageSummary:
    """Probe/decode/validate the corpus into ``data/tracks.parquet`` + ``quarantine/``; validate
    and copy the social tables into ``social/``. GX failures stop here."""
    ctx = StageContext.open(settings, stage="ingest")
    state = ctx.state
    corpus, social_dir = corpus_location(settings)
    candidates = candidates_for(corpus, settings.ingest.adapter, settings.ingest)
    key = inputs_fingerprint(candidates, settings.ingest)
    forgotten = forgotten_users(state.social)
    social_tables_key = social_key(social_dir, forgotten.listed()) if social_dir and social_dir.exists() else None
    social_paths = social_table_paths(state)
    tracks_current = output_is_current(state.tracks, key) and state.ingest_quarantine.exists()
    social_current = social_tables_key is None or all(output_is_current(p, social_tables_key) for p in social_paths.values())
    outputs = {"tracks": str(state.tracks), "quarantine": str(state.ingest_quarantine),
               "data_docs": str(state.data_docs / "index.html")}
    if social_tables_key:
        outputs.update({f"social.{k}": str(v) for k, v in social_paths.items()})
    if tracks_current and social_current:
        return ctx.summary("ingest", True, outputs, (read_meta(state.tracks) or {}).get("summary", {}))

    validator = validator or shared_validator(settings)
    counts: dict[str, Any] = {}
    if not tracks_current:
        result = ingest(candidates, settings.ingest, cache_dir=state.remote_cache, progress=progress)
        validator.validate(result.tracks, "tracks", {"min_duration_s": settings.ingest.min_duration_s,
                                                     "max_duration_s": settings.ingest.max_duration_s})
        counts = result.summary()
        before = set(read_table(state.tracks)["track_id"]) if state.tracks.exists() else set()
        added = sorted(set(result.tracks["track_id"]) - before)
        write_parquet(result.quarantine, state.ingest_quarantine, {"key": key})
        write_parquet(result.tracks, state.tracks, {"key": key, "summary": counts, "root": str(candidates.root)})
        write_json_atomic(state.ingest_batch, {"time": datetime.now(UTC).isoformat(timespec="seconds"),
                                               "tracks_before": len(before), "added": added})
    else:
        counts = (read_meta(state.tracks) or {}).get("summary", {})
    if social_dir and social_tables_key and not social_current:
        release_freed_memory()  # what probing and validating the tracks freed, before the largest tables
        tables = read_social(social_dir)
        for name, table in tables.items():
            validator.validate(table, name)
        tables, dropped = drop_forgotten(tables, forgotten)
        if dropped:
            counts["forgotten_rows_dropped"] = dropped
        for name, table in tables.items():
            write_parquet(table, social_paths[name], {"key": social_tables_key, "source": str(social_dir)})
        counts["social"] = {name: len(t) for name, t in tables.items()}
    return ctx.summary("ingest", False, outputs, counts)
