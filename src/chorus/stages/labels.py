"""The labels stage: weighted voting over the follow graph into global, group and personal truth,
the social rejects, and the held-out-tags protocol; forgetting a user."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from chorus import MOODS
from chorus.compute import release_freed_memory
from chorus.config import ChorusSettings, stable_hash
from chorus.errors import InputError
from chorus.ingest import (
    drop_forgotten,
    read_social,
    rekey_forgotten,
    remember_forgotten,
    social_key,
    social_user_ids,
)
from chorus.io import output_is_current, read_meta, read_table, write_parquet
from chorus.social.protocol import evaluate_protocol, label_quality
from chorus.social.tally import tally_votes
from chorus.social.voting import (
    BatchRunner,
    build_truths,
    select_targets,
)
from chorus.stages.context import (
    StageContext,
    StageSummary,
    shared_validator,
    update_metrics,
)
from chorus.stages.inputs import corpus_location, load_tracks, social_table_paths
from chorus.state import StateDir
from chorus.validation import Validator


def personal_target_count(settings: ChorusSettings) -> int:
    """How many personal truths the labels stage will compute (0 without social tables)."""
    users = StateDir(settings.state_dir).social_table("users")
    return len(select_targets(read_table(users), settings.labels)) if users.exists() else 0


def labels_key(settings: ChorusSettings) -> str:
    """What the voted labels depend on: the label settings, the synonyms, the social tables' and
    the tracks' content keys (read from their metadata: cheap)."""
    state = StateDir(settings.state_dir)
    synonyms = settings.labels.synonyms_file
    return stable_hash({
        "settings": settings.labels.config_hash(),
        "synonyms": Path(synonyms).read_text() if synonyms else "bundled",
        "social": {name: (read_meta(p) or {}).get("key") for name, p in social_table_paths(state).items()},
        "tracks": (read_meta(state.tracks) or {}).get("key"),
    })


def _labels_current(state: StateDir, key: str) -> bool:
    """Whether the labels and the social rejects on disk were made for ``key``."""
    return output_is_current(state.labels_table, key) and state.social_rejects.exists()


def current_labels_key(settings: ChorusSettings) -> str | None:
    """The labels' key when the outputs on disk were made from the current inputs, else None
    (missing, deleted or stale outputs: the labels must be computed)."""
    state = StateDir(settings.state_dir)
    if not all(p.exists() for p in social_table_paths(state).values()):
        return None
    key = labels_key(settings)
    return key if _labels_current(state, key) else None


def _require_social_tables(state: StateDir) -> dict[str, Path]:
    paths = social_table_paths(state)
    missing = [p for p in paths.values() if not p.exists()]
    if missing:
        raise InputError(str(missing[0]), "no social tables: run `chorus ingest` with social data first")
    return paths


def _planted_moods(tracks: pd.DataFrame) -> pd.Series | None:
    """track id -> the demo's planted mood, where a track has one of the 12 (None without a mood column)."""
    if "mood" not in tracks.columns:
        return None
    planted = tracks.set_index(tracks["track_id"].astype(str))["mood"].dropna()
    return planted[planted.isin(MOODS)]


def labels_stage(settings: ChorusSettings, validator: Validator | None = None, runner: BatchRunner | None = None) -> StageSummary:
    """Weighted voting over the follow graph: global, group and personal truth into
    ``labels/labels.parquet``; social rejects into ``quarantine/social-rejects.parquet``; the
    held-out-tags protocol into ``reports/metrics.json`` under "voting"."""
    ctx = StageContext.open(settings, stage="labels")
    state = ctx.state
    paths = _require_social_tables(state)
    tracks = load_tracks(settings)
    key = labels_key(settings)
    outputs = {"labels": str(state.labels_table), "rejects": str(state.social_rejects), "metrics": str(state.metrics)}
    if _labels_current(state, key):
        return ctx.summary("labels", True, outputs, (read_meta(state.labels_table) or {}).get("summary", {}))

    planted = _planted_moods(tracks)
    tally = tally_votes(paths, set(tracks["track_id"].astype(str)), settings.labels.synonyms_file)
    del tracks
    release_freed_memory()  # what reading and tallying the social tables freed, before the truths
    table, truth_counts = build_truths(tally.built.graph, tally.tags, tally.users, settings.labels, runner)
    protocol = evaluate_protocol(tally.built.graph, tally.tags, tally.users, settings.labels)
    rejects, graph_counts, vote_counts = tally.rejects, tally.built.counts, tally.counts
    del tally
    release_freed_memory()  # the graph, the tag matrix and the voting's working copies, before validation's own
    (validator or shared_validator(settings)).validate(table, "labels")
    release_freed_memory()  # the copies validation made
    if planted is not None:  # the demo's planted mood: the only true mood it has
        protocol["label_quality"] = label_quality(table, planted, settings.labels.top_k)
    summary = {
        "rows": len(table),
        **truth_counts,
        "graph": graph_counts,
        "rejects": {f"{t}: {r}": int(n) for (t, r), n in rejects.groupby(["table", "reason"]).size().items()},
        **vote_counts,
    }
    write_parquet(rejects, state.social_rejects, {"key": key})
    write_parquet(table, state.labels_table, {"key": key, "summary": summary, "moods": list(MOODS),
                                              "settings": settings.labels.model_dump(mode="json")})
    update_metrics(state.metrics, "voting", protocol)
    return ctx.summary("labels", False, outputs, _labels_counts(summary, protocol))


def _labels_counts(summary: dict[str, Any], protocol: dict[str, Any]) -> dict[str, Any]:
    counts = {k: v for k, v in summary.items() if k not in ("discarded_tags",)}
    margin = protocol.get("margin_personal_minus_global", {}).get("f1")
    if margin:
        counts["f1_personal_minus_global"] = f"{margin['mean']:+.3f} [{margin['ci'][0]:+.3f}, {margin['ci'][1]:+.3f}]"
    return counts


def forget_user_stage(settings: ChorusSettings, user_id: str) -> dict[str, Any]:
    """Remove a user's social rows (now and on every later ingest) and recompute the labels."""
    state = StateDir(settings.state_dir)
    paths = social_table_paths(state)
    if not all(p.exists() for p in paths.values()):
        raise InputError(str(state.social), "no social tables: run `chorus ingest` first")
    tables = {name: read_table(p) for name, p in paths.items()}
    if str(user_id) not in set(tables["users"]["user_id"].astype(str)):
        raise InputError(str(paths["users"]), f"no user '{user_id}' (already forgotten, or never there)")
    forgotten = remember_forgotten(state.social, user_id)
    kept, dropped = drop_forgotten(tables, forgotten)
    _stamp_social_tables(settings, state, kept, forgotten.listed())
    labels = labels_stage(settings)
    # the personalised model's row of this listener goes now; the next training no longer sees them
    from chorus.personal.store import forget_listener

    return {"dropped": dropped, "labels": labels.as_dict(),
            "personal_model_row_removed": forget_listener(state.personal, forgotten.digest(user_id))}


def _stamp_social_tables(settings: ChorusSettings, state: StateDir, tables: dict[str, pd.DataFrame],
                         digests: list[str]) -> None:
    """Writes the copied social tables under the key ingest computes for this source and forgotten
    list: a later ingest finds them current."""
    paths = social_table_paths(state)
    _, social_dir = corpus_location(settings)
    key = (social_key(social_dir, digests)
           if social_dir and social_dir.exists() else stable_hash({"forgotten": digests, "tables": str(state.social)}))
    for name, table in tables.items():
        write_parquet(table, paths[name], {**(read_meta(paths[name]) or {}), "key": key})


def rekey_forgotten_stage(settings: ChorusSettings) -> dict[str, int]:
    """A new key for the forgotten users' digests (``chorus.ingest.rekey_forgotten``), matched
    against the ids of the source's social tables and of the copies ingest made; the copies and
    the labels are then current under the new digests."""
    state = StateDir(settings.state_dir)
    _, social_dir = corpus_location(settings)
    paths = social_table_paths(state)
    copies = {name: read_table(p) for name, p in paths.items() if p.exists()}
    ids = social_user_ids(copies)
    if social_dir and social_dir.exists():
        ids |= social_user_ids(read_social(social_dir))
    forgotten, counts = rekey_forgotten(state.social, ids)
    if len(copies) == len(paths):
        _stamp_social_tables(settings, state, copies, forgotten.listed())
        labels_stage(settings)  # the same inputs under new digests: the labels are current again
    return counts
