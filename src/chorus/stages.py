"""Each stage's edges: read its inputs from the state directory, decide from the data on disk
whether its output is current, compute with the library, write atomically, report a summary.

Prefect-free: ``tasks/`` wraps these with retries and logging, ``flows/`` composes them, and
tests call them directly. A stage whose inputs and settings are unchanged does no work.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from chorus import MOODS
from chorus.config import ChorusSettings, stable_hash
from chorus.io import output_is_current, read_meta, read_table, write_json_atomic, write_parquet, write_text_atomic
from chorus.state import StateDir
from chorus.validation import with_known_tracks

log = logging.getLogger(__name__)


@dataclass
class StageSummary:
    """What a stage did: ``skipped`` when its output was already current."""

    stage: str
    skipped: bool
    outputs: dict[str, str] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "skipped": self.skipped, "outputs": self.outputs,
                "counts": self.counts, "seconds": round(self.seconds, 2)}


# --- demo ---------------------------------------------------------------------------------


def demo_stage(settings: ChorusSettings, progress: Any = None) -> StageSummary:
    from chorus.datasets.demo import generate_demo

    started = time.perf_counter()
    state = StateDir(settings.state_dir).create()
    stamp = state.demo / "demo.json"
    before = json.loads(stamp.read_text()).get("key") if stamp.exists() else None
    corpus = generate_demo(settings.demo, state.demo, progress=progress)
    return StageSummary(
        "demo",
        skipped=before == corpus.key,
        outputs={"manifest": str(corpus.manifest), "social": str(corpus.social_dir)},
        counts={"tracks": corpus.tracks, "skipped_works": corpus.skipped_works},
        seconds=time.perf_counter() - started,
    )


def pretext_settings(settings: ChorusSettings) -> ChorusSettings:
    """The settings of the backbone's rendered pretext corpus: a state directory of its own under
    ``<state_dir>/pretext`` (its corpus, tracks table and features, made with the main feature
    configuration), ingested as a demo corpus; models still go to the main registry."""
    state = StateDir(settings.state_dir)
    ingest = settings.ingest.model_copy(update={"manifest": None, "adapter": "demo", "social_dir": None,
                                                "split_files": None})
    return settings.model_copy(update={"state_dir": state.pretext, "ingest": ingest,
                                       "mlflow_tracking_uri": settings.tracking_uri})


def training_source(settings: ChorusSettings, task: str) -> ChorusSettings:
    """Whose state holds a task's training data: the pretext corpus's for the backbone (unless
    ``train.backbone.corpus`` is ``own``), the main corpus's for everything else."""
    if task == "pretext" and settings.train.backbone.corpus == "rendered":
        return pretext_settings(settings)
    return settings


def held_out_works(settings: ChorusSettings) -> set[str]:
    """The music21 works of the main corpus's valid and test tracks, from the demo manifest (by
    content hash). A corpus that is not the demo holds none: its audio is not rendered from
    music21, so no rendering of the pretext corpus can be one of its tracks."""
    tracks = load_tracks(settings)
    corpus, _ = corpus_location(settings)
    manifest = corpus / "manifest.csv"
    if not (corpus / "demo.json").exists() or not manifest.exists():
        return set()
    work_of = pd.read_csv(manifest, usecols=["sha256", "work"]).set_index("sha256")["work"]
    held_out = tracks.loc[tracks["split"] != "train", "sha256"]
    missing = set(held_out) - set(work_of.index)
    if missing:
        from chorus.errors import InputError

        raise InputError(str(manifest), f"{len(missing)} held-out tracks are not in the demo manifest; their works "
                                        "cannot be kept out of the pretext corpus", "re-run `chorus ingest`")
    return set(work_of.loc[list(held_out)].astype(str))


def pretext_tracks(pretext: ChorusSettings) -> pd.DataFrame:
    """The pretext corpus's tracks table (the backbone's training data)."""
    path = StateDir(pretext.state_dir).tracks
    if not path.exists():
        from chorus.errors import InputError

        raise InputError(str(path), "the backbone's pretext corpus is not ingested: run `chorus pretrain` "
                                    "(or set train.backbone.corpus=own)")
    return read_table(path)


def pretext_corpus_stage(settings: ChorusSettings, progress: Any = None) -> StageSummary:
    """Render the backbone's pretext corpus (after ingest: it leaves out the works the main corpus
    holds out); cached by its key like the demo."""
    from chorus.datasets.pretext import STAMP_NAME, generate_pretext_corpus

    started = time.perf_counter()
    state = StateDir(pretext_settings(settings).state_dir).create()
    stamp = state.demo / STAMP_NAME
    before = json.loads(stamp.read_text()).get("key") if stamp.exists() else None
    corpus = generate_pretext_corpus(settings.demo, settings.train.backbone, state.demo, held_out_works(settings),
                                     progress=progress)
    return StageSummary(
        "pretext-corpus",
        skipped=before == corpus.key,
        outputs={"manifest": str(corpus.manifest)},
        counts={"tracks": corpus.tracks, "works": corpus.works, "excluded_works": corpus.excluded_works,
                "skipped_works": corpus.skipped_works},
        seconds=time.perf_counter() - started,
    )


# --- ingest -------------------------------------------------------------------------------


def corpus_location(settings: ChorusSettings) -> tuple[Path, Path]:
    """(corpus location, social folder): the configured ones or the demo corpus."""
    state = StateDir(settings.state_dir)
    corpus = Path(settings.ingest.manifest) if settings.ingest.manifest else state.demo
    social = Path(settings.ingest.social_dir) if settings.ingest.social_dir else (
        state.demo / "social" if not settings.ingest.manifest else None
    )
    return corpus, social  # type: ignore[return-value]


def ingest_stage(settings: ChorusSettings, progress: Any = None, validator: Any = None) -> StageSummary:
    """Probe/decode/validate the corpus into ``data/tracks.parquet`` + ``quarantine/``; validate
    and copy the social tables into ``social/``. GX failures stop here."""
    from chorus.datasets.adapters import candidates_for
    from chorus.ingest import ingest, inputs_fingerprint, read_social

    started = time.perf_counter()
    state = StateDir(settings.state_dir).create()
    corpus, social_dir = corpus_location(settings)
    candidates = candidates_for(corpus, settings.ingest.adapter, settings.ingest)
    key = inputs_fingerprint(candidates, settings.ingest)
    quarantine_path = state.quarantine / "ingest.parquet"
    from chorus.ingest import drop_forgotten, forgotten_digests, social_key as social_tables_key

    forgotten = forgotten_digests(state.social)
    social_key = social_tables_key(social_dir, forgotten) if social_dir and social_dir.exists() else None
    social_paths = social_table_paths(state)
    tracks_current = output_is_current(state.tracks, key) and quarantine_path.exists()
    social_current = social_key is None or all(output_is_current(p, social_key) for p in social_paths.values())
    outputs = {"tracks": str(state.tracks), "quarantine": str(quarantine_path), "data_docs": str(state.data_docs / "index.html")}
    if social_key:
        outputs.update({f"social.{k}": str(v) for k, v in social_paths.items()})
    if tracks_current and social_current:
        meta = read_meta(state.tracks) or {}
        return StageSummary("ingest", True, outputs, meta.get("summary", {}), time.perf_counter() - started)

    validator = validator or shared_validator(settings)
    counts: dict[str, Any] = {}
    if not tracks_current:
        result = ingest(candidates, settings.ingest, cache_dir=state.data / "remote-cache", progress=progress)
        validator.validate(result.tracks, "tracks", {"min_duration_s": settings.ingest.min_duration_s,
                                                     "max_duration_s": settings.ingest.max_duration_s})
        counts = result.summary()
        write_parquet(result.quarantine, quarantine_path, {"key": key})
        write_parquet(result.tracks, state.tracks, {"key": key, "summary": counts, "root": str(candidates.root)})
    else:
        counts = (read_meta(state.tracks) or {}).get("summary", {})
    if social_key and not social_current:
        tables = read_social(social_dir)
        for name, table in tables.items():
            validator.validate(table, name)
        tables, dropped = drop_forgotten(tables, forgotten)
        if dropped:
            counts["forgotten_rows_dropped"] = dropped
        for name, table in tables.items():
            write_parquet(table, social_paths[name], {"key": social_key, "source": str(social_dir)})
        counts["social"] = {name: len(t) for name, t in tables.items()}
    return StageSummary("ingest", False, outputs, counts, time.perf_counter() - started)


def load_tracks(settings: ChorusSettings) -> pd.DataFrame:
    state = StateDir(settings.state_dir)
    if not state.tracks.exists():
        from chorus.errors import InputError

        raise InputError(str(state.tracks), "no tracks table: run `chorus ingest` first")
    return read_table(state.tracks)


VOTED_TASK = "voted_mood"


def with_task_labels(tracks: pd.DataFrame, settings: ChorusSettings) -> pd.DataFrame:
    """Tasks' labels joined from their annotation files (``source: file``), and single-label
    values outside a task's given vocabulary blanked (the task ignores those tracks)."""
    from chorus.datasets.adapters import read_manifest_table
    from chorus.errors import InputError

    for name, task in settings.tasks.items():
        column = task.column or name
        if task.source == "file":
            path = Path(task.file).expanduser()  # type: ignore[arg-type]
            if not path.is_file():
                raise InputError(str(path), f"annotation file of task '{name}' not found")
            table = read_manifest_table(path)
            key = "track_id" if "track_id" in table.columns else "uri"
            if key not in table.columns or column not in table.columns:
                raise InputError(str(path), f"task '{name}' needs a track_id or uri column and a '{column}' column",
                                 f"columns: {list(table.columns)}")
            if key == "uri":  # as in the manifest: relative to the annotation file's folder
                table["uri"] = [str((path.parent / u).resolve()) for u in table["uri"]]
            table = table.drop_duplicates(key, keep="last").set_index(key)
            for name_in_file in {column, task.split} & set(table.columns) - {"split"}:
                tracks[name_in_file] = tracks[key].map(table[name_in_file])
        if task.kind == "single" and task.vocabulary and column in tracks.columns:
            tracks[column] = tracks[column].where(tracks[column].isin(task.vocabulary))
    split = settings.train.split_column
    if split != "split":  # the task's own protocol: its split replaces the corpus's
        if split not in tracks.columns:
            raise InputError(str(StateDir(settings.state_dir).tracks), f"no split column '{split}'",
                             f"columns: {list(tracks.columns)}")
        tracks["split"] = tracks[split].where(tracks[split].isin(["train", "valid", "test"]))
        tracks = tracks[tracks["split"].notna()].reset_index(drop=True)
    return tracks


def training_tracks(settings: ChorusSettings) -> pd.DataFrame:
    """The tracks table plus ``voted_mood``: the top mood of each track's global voted truth
    (where the labels stage has run), so ``train.task=voted_mood`` trains on the crowd's labels;
    plus the tasks' labels from annotation files."""
    tracks = with_task_labels(load_tracks(settings), settings)
    labels = StateDir(settings.state_dir).labels / "labels.parquet"
    if labels.exists():
        from chorus.social.voting import SCORE_COLUMNS

        table = read_table(labels, columns=["scope", "track_id", *SCORE_COLUMNS])
        glob = table[table["scope"] == "global"].set_index("track_id")
        top = glob[SCORE_COLUMNS].to_numpy().argmax(axis=1)
        voted = pd.Series([MOODS[j] for j in top], index=glob.index, dtype=object)
        tracks[VOTED_TASK] = tracks["track_id"].map(voted)
    return tracks


# --- features -----------------------------------------------------------------------------


def features_root(settings: ChorusSettings) -> Path:
    return StateDir(settings.state_dir).features


_VALIDATORS: dict[str, Any] = {}


def shared_validator(settings: ChorusSettings) -> Any:
    """One GX context per process and state directory: its set-up costs seconds."""
    from chorus.validation import Validator

    docs = StateDir(settings.state_dir).data_docs
    if str(docs) not in _VALIDATORS:
        _VALIDATORS[str(docs)] = Validator(docs)
    return _VALIDATORS[str(docs)]


def extract_shard(shard: Any, settings: ChorusSettings, client: Any = None, validator: Any = None,
                  priority: int = 0) -> dict[str, Any]:
    """Extract one shard's files (through a Dask client when given: one Dask task per file, and
    the Parquet staged on a worker), validate it with GX, then rename it into place."""
    from chorus.errors import ValidationFailedError
    from chorus.features import (
        commit_shard, discard_shard, extract_batch_or_problems, extract_track_or_problem, segment_check_params,
        shard_is_current, stage_shard, uses_device_batches,
    )

    if shard_is_current(shard):
        return {"shard": shard.path.name, "skipped": True, "tracks": len(shard.tracks)}
    fs = settings.features
    ids, uris = shard.tracks["track_id"].tolist(), shard.tracks["uri"].tolist()
    extract, jobs = extract_track_or_problem, (ids, uris)  # one file per call
    if uses_device_batches(fs):  # the torch chain: device_batch files per Dask task and per device call
        step = fs.device_batch
        extract = extract_batch_or_problems
        jobs = ([ids[i : i + step] for i in range(0, len(ids), step)],
                [uris[i : i + step] for i in range(0, len(uris), step)])
    if client is not None:
        # Shards submitted together would otherwise interleave their files and all finish at the
        # end; by priority, earlier shards finish first and their checks overlap later compute.
        files = client.map(extract, *jobs, [fs] * len(jobs[0]), pure=False, priority=priority)
        staged = client.submit(stage_shard, shard, files, fs, pure=False, priority=priority).result()
    else:
        staged = stage_shard(shard, [extract(i, u, fs) for i, u in zip(*jobs, strict=True)], fs)
    extracted = sorted(set(ids) - {r["track_id"] for r in staged.rejected})
    result = {"shard": shard.path.name, "skipped": False, "tracks": len(extracted), "segments": staged.segments,
              "audio_seconds": round(staged.audio_seconds, 2), "rejected": staged.rejected}
    try:
        # Data Docs are rebuilt once, when the stage finishes
        (validator or shared_validator(settings)).validate(with_known_tracks(staged.checks, extracted), "feature_segments",
                                                           segment_check_params(fs, extracted), update_docs=False)
    except ValidationFailedError as failure:
        # reported, not written: the shard's tracks stay unextracted and the next run retries them
        discard_shard(staged)
        log.error("%s", failure)
        return {**result, "failed": str(failure), "segments": 0, "tracks": 0}
    commit_shard(staged)
    return result


def finish_features(settings: ChorusSettings, results: list[dict[str, Any]], seconds: float) -> StageSummary:
    """Index the shards that serve the current tracks; quarantine what could not be extracted."""
    from chorus.features import feature_dir, write_index

    state = StateDir(settings.state_dir)
    index = write_index(load_tracks(settings), settings.features, state.features)
    if any(not r["skipped"] for r in results):
        shared_validator(settings).build_docs()
    quarantine = state.quarantine / f"features-{settings.features.config_hash()}.parquet"
    write_parquet(pd.DataFrame(index["rejected"], columns=["track_id", "uri", "sha256", "reason", "detail"]), quarantine,
                  {"config_hash": settings.features.config_hash()})
    done = [r for r in results if not r["skipped"]]
    failed = [r for r in done if r.get("failed")]
    return StageSummary(
        "features",
        skipped=not done,
        outputs={"features": str(feature_dir(state.features, settings.features)), "index": index["path"],
                 "rejected": str(quarantine)},
        counts={"tracks": len(index["tracks"]), "shards": len(index["shards"]), "shards_written": len(done) - len(failed),
                "shards_failed_validation": len(failed), "segments_written": sum(r.get("segments", 0) for r in done),
                "audio_seconds_extracted": round(sum(r.get("audio_seconds", 0.0) for r in done), 1),
                "rejected": len(index["rejected"]), "rejected_this_run": sum(len(r.get("rejected", [])) for r in done)},
        seconds=seconds,
    )


# --- labels -------------------------------------------------------------------------------


def social_rejects(tables: dict[str, pd.DataFrame], known_tracks: set[str]) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Referential checks across the social tables: a playlist whose owner is unknown, a
    playlist_tracks row naming an unknown playlist or track, go to rejects with the reason (follows
    are checked by build_graph). Empty playlists are fine."""
    users = set(tables["users"]["user_id"].astype(str))
    playlists, members = tables["playlists"], tables["playlist_tracks"]
    rejects = []
    bad_owner = ~playlists["owner"].astype(str).isin(users)
    rejects.append(pd.DataFrame({"table": "playlists", "key": playlists.loc[bad_owner, "playlist_id"].astype(str),
                                 "reason": "unknown owner", "detail": playlists.loc[bad_owner, "owner"].astype(str)}))
    kept_playlists = playlists[~bad_owner]
    playlist_ids = set(kept_playlists["playlist_id"].astype(str))
    bad_playlist = ~members["playlist_id"].astype(str).isin(playlist_ids)
    bad_track = ~members["track_id"].astype(str).isin(known_tracks)
    for mask, reason in ((bad_playlist, "unknown or rejected playlist"), (bad_track & ~bad_playlist, "unknown track")):
        rejects.append(pd.DataFrame({"table": "playlist_tracks",
                                     "key": members.loc[mask, "playlist_id"].astype(str) + "/" + members.loc[mask, "track_id"].astype(str),
                                     "reason": reason, "detail": ""}))
    kept = {**tables, "playlists": kept_playlists.reset_index(drop=True),
            "playlist_tracks": members[~bad_playlist & ~bad_track].reset_index(drop=True)}
    return kept, pd.concat(rejects, ignore_index=True)


def personal_target_count(settings: ChorusSettings) -> int:
    """How many personal truths the labels stage will compute (0 without social tables)."""
    from chorus.social.voting import select_targets

    users = StateDir(settings.state_dir).social / "users.parquet"
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
    return output_is_current(state.labels / "labels.parquet", key) and (state.quarantine / "social-rejects.parquet").exists()


def current_labels_key(settings: ChorusSettings) -> str | None:
    """The labels' key when the outputs on disk were made from the current inputs, else None
    (missing, deleted or stale outputs: the labels must be computed)."""
    state = StateDir(settings.state_dir)
    if not all(p.exists() for p in social_table_paths(state).values()):
        return None
    key = labels_key(settings)
    return key if _labels_current(state, key) else None


def labels_stage(settings: ChorusSettings, validator: Any = None, runner: Any = None) -> StageSummary:
    """Weighted voting over the follow graph: global, group and personal truth into
    ``labels/labels.parquet``; social rejects into ``quarantine/social-rejects.parquet``; the
    held-out-tags protocol into ``reports/metrics.json`` under "voting"."""
    from chorus.social.graph import build_graph
    from chorus.social.protocol import evaluate_protocol, label_quality
    from chorus.social.tags import TagMapper
    from chorus.social.voting import build_truths, tag_matrix, user_song_votes

    started = time.perf_counter()
    state = StateDir(settings.state_dir).create()
    paths = social_table_paths(state)
    missing = [p for p in paths.values() if not p.exists()]
    if missing:
        from chorus.errors import InputError

        raise InputError(str(missing[0]), "no social tables: run `chorus ingest` with social data first")
    tracks = load_tracks(settings)
    key = labels_key(settings)
    out = state.labels / "labels.parquet"
    rejects_path = state.quarantine / "social-rejects.parquet"
    outputs = {"labels": str(out), "rejects": str(rejects_path), "metrics": str(state.reports / "metrics.json")}
    if _labels_current(state, key):
        meta = read_meta(out) or {}
        return StageSummary("labels", True, outputs, meta.get("summary", {}), time.perf_counter() - started)

    tables = {name: read_table(p) for name, p in paths.items()}
    tables["playlists"]["tags"] = tables["playlists"]["tags"].map(list)
    tables, rejects = social_rejects(tables, set(tracks["track_id"].astype(str)))
    built = build_graph(tables["users"], tables["follows"])
    rejects = pd.concat([rejects, pd.DataFrame({"table": "follows",
                                                "key": built.rejects["follower"].astype(str) + "->" + built.rejects["followee"].astype(str),
                                                "reason": built.rejects["reason"], "detail": ""})], ignore_index=True)
    mapper = TagMapper.load(settings.labels.synonyms_file)
    votes = user_song_votes(tables["playlists"], tables["playlist_tracks"], mapper)
    tags = tag_matrix(votes, built.graph)
    table, truth_counts = build_truths(built.graph, tags, tables["users"], settings.labels, runner)
    validator = validator or shared_validator(settings)
    validator.validate(table, "labels")
    protocol = evaluate_protocol(built.graph, tags, tables["users"], settings.labels)
    if "mood" in tracks.columns:  # the demo's planted mood: the only true mood it has
        planted = tracks.set_index(tracks["track_id"].astype(str))["mood"].dropna()
        protocol["label_quality"] = label_quality(table, planted[planted.isin(MOODS)], settings.labels.top_k)
    summary = {
        "rows": len(table),
        **truth_counts,
        "graph": built.counts,
        "rejects": {f"{t}: {r}": int(n) for (t, r), n in rejects.groupby(["table", "reason"]).size().items()},
        "user_song_pairs": len(votes.pairs),
        "playlists_without_mood": votes.playlists_without_mood,
        "discarded_tags": dict(votes.discarded_tags.most_common()),
    }
    write_parquet(rejects, rejects_path, {"key": key})
    write_parquet(table, out, {"key": key, "summary": summary, "moods": list(MOODS), "settings": settings.labels.model_dump(mode="json")})
    update_metrics(state.reports / "metrics.json", "voting", protocol)
    counts = {k: v for k, v in summary.items() if k not in ("discarded_tags",)}
    margin = protocol.get("margin_personal_minus_global", {}).get("f1")
    if margin:
        counts["f1_personal_minus_global"] = f"{margin['mean']:+.3f} [{margin['ci'][0]:+.3f}, {margin['ci'][1]:+.3f}]"
    return StageSummary("labels", False, outputs, counts, time.perf_counter() - started)


def forget_user_stage(settings: ChorusSettings, user_id: str) -> dict[str, Any]:
    """Remove a user's social rows (now and on every later ingest) and recompute the labels."""
    from chorus.errors import InputError
    from chorus.ingest import drop_forgotten, remember_forgotten, social_key

    state = StateDir(settings.state_dir)
    paths = social_table_paths(state)
    if not all(p.exists() for p in paths.values()):
        raise InputError(str(state.social), "no social tables: run `chorus ingest` first")
    tables = {name: read_table(p) for name, p in paths.items()}
    if str(user_id) not in set(tables["users"]["user_id"].astype(str)):
        raise InputError(str(paths["users"]), f"no user '{user_id}' (already forgotten, or never there)")
    digests = remember_forgotten(state.social, user_id)
    kept, dropped = drop_forgotten(tables, digests)
    _, social_dir = corpus_location(settings)
    # the key ingest computes for this source and forgotten list: a later ingest finds it current,
    # and the labels stage sees changed social inputs and recomputes
    key = (social_key(social_dir, digests)
           if social_dir and social_dir.exists() else stable_hash({"forgotten": digests, "tables": str(state.social)}))
    for name, table in kept.items():
        write_parquet(table, paths[name], {**(read_meta(paths[name]) or {}), "key": key})
    labels = labels_stage(settings)
    return {"dropped": dropped, "labels": labels.as_dict()}


def social_data_present(settings: ChorusSettings) -> bool:
    """Whether ingest stored the crowd's tables (a standard dataset has none)."""
    return all(p.exists() for p in social_table_paths(StateDir(settings.state_dir)).values())


def social_table_paths(state: StateDir) -> dict[str, Path]:
    """The validated copies of the social tables under the state directory."""
    from chorus.ingest import SOCIAL_TABLES

    return {name: state.social / f"{name}.parquet" for name in SOCIAL_TABLES}


def read_metrics(path: Path) -> dict[str, Any]:
    """reports/metrics.json: one section per stage that reports figures ({} before any)."""
    return json.loads(path.read_text()) if path.exists() else {}


def update_metrics(path: Path, section: str, value: Any) -> None:
    summary = read_metrics(path)
    summary[section] = value
    write_json_atomic(path, summary)


# --- train --------------------------------------------------------------------------------


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def voted_global_labels(settings: ChorusSettings) -> dict[str, list[str]]:
    """track -> the moods the global vote chose ({} before the labels stage has run)."""
    path = StateDir(settings.state_dir).labels / "labels.parquet"
    if not path.exists():
        return {}
    table = read_table(path, columns=["scope", "track_id", "labels"])
    glob = table[table["scope"] == "global"]
    return {t: [str(m) for m in labels] for t, labels in zip(glob["track_id"], glob["labels"], strict=True)}


def mood_labels(settings: ChorusSettings, tracks: pd.DataFrame) -> Any:
    """The multi-label task's truth (``train.mood_task``): by default the moods chosen by the
    global vote; or a column of ``tracks`` (``training_tracks``) with labels joined by the task's
    separator (a dataset's tags), its vocabulary given or the labels found (the ``top_n`` most
    frequent in the train split)."""
    from chorus.candidates import MultiLabelTruth

    task = settings.multi_task()
    if task.source == "voted":
        return MultiLabelTruth(list(task.vocabulary or MOODS), voted_global_labels(settings))
    from chorus.datasets.standard import top_tags

    column = task.column or settings.train.mood_task
    if column not in tracks.columns:
        from chorus.errors import InputError

        raise InputError(str(StateDir(settings.state_dir).tracks), f"no '{column}' column for task '{settings.train.mood_task}'",
                         f"columns: {', '.join(tracks.columns)}")
    labelled = tracks[tracks[column].notna()]
    lists = {t: [x.strip() for x in str(v).split(task.separator) if x.strip()]
             for t, v in zip(labelled["track_id"], labelled[column], strict=True)}
    train = set(labelled.loc[labelled["split"] == "train", "track_id"])
    vocabulary = list(task.vocabulary) if task.vocabulary else sorted(top_tags([lists[t] for t in train], task.top_n))
    chosen = set(vocabulary)
    return MultiLabelTruth(vocabulary, {t: [x for x in labels if x in chosen] for t, labels in lists.items()})


def candidate_key(settings: ChorusSettings, spec: Any, targets: Any, dep_keys: dict[str, str]) -> str:
    """What a candidate's training depends on: its definition, the settings it reads, the
    features, its targets, and the keys of the models it builds on."""
    from chorus.candidates import key_settings
    from chorus.features import features_key

    source = training_source(settings, spec.task)
    return stable_hash({
        "candidate": key_settings(spec, settings.train),
        "features": features_key(features_root(source), settings.features),
        "targets": stable_hash(targets.digest_rows()),
        "deps": dep_keys,
    })


def train_key(settings: ChorusSettings, tracks: pd.DataFrame, candidate: str = "short_chunk") -> str:
    """The cache key of one candidate (default: the short-chunk CNN) on these tracks."""
    from chorus.candidates import CATALOGUE, task_targets

    spec = CATALOGUE[candidate]
    return candidate_key(settings, spec, task_targets(spec.task, tracks, settings.train, mood_labels(settings, tracks)), {})


def train_stage(settings: ChorusSettings, on_epoch: Any = None, candidates: list[str] | None = None,
                assign_challengers: bool = True) -> StageSummary:
    """Train every selected candidate (``train.candidates`` or the profile's set, plus what they
    need), log each as an MLflow run and register it under its task's name. A candidate whose key
    (settings, features, targets, dependencies) has a registered version is not retrained. The
    best-validated new version of each name becomes its ``challenger``."""
    from chorus import registry
    from chorus.candidates import resolve_candidates, task_targets
    from chorus.features import load_features

    started = time.perf_counter()
    state = StateDir(settings.state_dir).create()
    ts = settings.train
    registry.configure(settings.tracking_uri, state.mlflow_artifacts)
    tracks = training_tracks(settings)
    specs = resolve_candidates(candidates or list(ts.selected))
    if ts.task not in tracks.columns and any(spec.task in ("style", "hash") for spec in specs):
        from chorus.errors import InputError

        raise InputError(str(state.tracks), f"train.task '{ts.task}' is not a column of the tracks table",
                         "choose a task of this corpus: chorus run --task <name>")
    moods = mood_labels(settings, tracks)
    targets_of: dict[str, Any] = {}
    features_of: dict[Path, Any] = {}  # per source state: the backbone's may be the pretext corpus
    keys: dict[str, str] = {}
    deps: dict[str, Any] = {}
    needed = {need for spec in specs for need in spec.needs}
    results: dict[str, dict[str, Any]] = {}
    tracks_of: dict[Path, pd.DataFrame] = {settings.state_dir: tracks}
    for spec in specs:
        source = training_source(settings, spec.task)
        if source.state_dir not in tracks_of:
            tracks_of[source.state_dir] = pretext_tracks(source)
        source_tracks = tracks_of[source.state_dir]
        if spec.task not in targets_of:
            targets_of[spec.task] = task_targets(spec.task, source_tracks, ts, moods)
        targets = targets_of[spec.task]
        key = keys[spec.name] = candidate_key(settings, spec, targets, {n: keys[n] for n in spec.needs})
        name = ts.registered_name(spec.registered_task(ts))
        ref = registry.find_version(name, key)
        row: dict[str, Any] = {"registered": name, "task": spec.registered_task(ts), "kind": spec.kind}
        if ref is not None:
            row.update(skipped=True, valid_score=_version_metric(ref.run_id, "valid_score"))
            if spec.name in needed:
                deps[spec.name] = registry.load_scorer(name, ref.version)
        else:
            features = features_of.get(source.state_dir)
            if features is None:
                from chorus.features import map_names

                ids = source_tracks.loc[source_tracks["split"].isin(["train", "valid"]), "track_id"].tolist()
                features = features_of[source.state_dir] = load_features(
                    StateDir(source.state_dir).features, settings.features, ids, maps=map_names(settings.features))
            checkpoint = state.checkpoints / f"{spec.name}-{key}.pt"
            run_id = registry.training_run(spec.name, key)
            trained = _train_one(spec, features, settings, targets, deps, checkpoint, on_epoch, run_id)
            ref = _register(spec, trained, name, key, settings, features, run_id)
            checkpoint.unlink(missing_ok=True)
            deps[spec.name] = trained.scorer
            row.update(skipped=False, **trained.summary)
        row.update(version=ref.version, run_id=ref.run_id, uri=ref.uri)
        results[spec.name] = row
    if assign_challengers:
        set_challengers(results)
    return train_summary(settings, results, started)


def set_challengers(results: dict[str, dict[str, Any]]) -> None:
    """Each registered name with versions new in this run gets the alias ``challenger`` on the
    best-validated of them; the promotion gate decides whether it becomes champion."""
    from chorus import registry

    for name in sorted({r["registered"] for r in results.values()}):
        new = [r for r in results.values() if r["registered"] == name and not r["skipped"]]
        if name.endswith("-backbone") or not new:
            continue
        best = max(new, key=lambda r: (r.get("valid_score") if r.get("valid_score") is not None else -1.0))
        registry.set_alias(name, "challenger", best["version"])
    for row in results.values():
        row["champion"] = registry.alias_version(row["registered"], "champion")
        row["challenger"] = registry.alias_version(row["registered"], "challenger")


def train_summary(settings: ChorusSettings, results: dict[str, dict[str, Any]], started: float) -> StageSummary:
    skipped = all(r["skipped"] for r in results.values())
    counts = {"candidates": results, "trained": sum(not r["skipped"] for r in results.values()),
              "reused": sum(r["skipped"] for r in results.values())}
    return StageSummary("train", skipped, {"tracking_uri": settings.tracking_uri,
                                           **{k: r["uri"] for k, r in results.items()}}, counts, time.perf_counter() - started)


def pretrain_stage(settings: ChorusSettings, on_epoch: Any = None) -> StageSummary:
    """The backbone's pretext training on its own (cached like any candidate)."""
    summary = train_stage(settings, on_epoch=on_epoch, candidates=["backbone"])
    summary.stage = "pretrain"
    return summary


def _version_metric(run_id: str, metric: str) -> float | None:
    from mlflow import MlflowClient

    run = MlflowClient().get_run(run_id)
    value = run.data.metrics.get(metric)
    return float(value) if value is not None else None


def _train_one(spec: Any, features: Any, settings: ChorusSettings, targets: Any, deps: dict[str, Any],
               checkpoint: Path, on_epoch: Any, run_id: str) -> Any:
    from chorus import registry
    from chorus.candidates import train_candidate

    def report(row: dict[str, float]) -> None:
        registry.log_epoch(run_id, row)  # live: a long training can be watched in the MLflow UI
        if on_epoch:
            on_epoch({"candidate": spec.name, **row})

    return train_candidate(spec, features, settings.features, targets, settings.train, deps, checkpoint, report)


def _register(spec: Any, trained: Any, name: str, key: str, settings: ChorusSettings, features: Any, run_id: str) -> Any:
    import numpy as np

    from chorus import registry
    from chorus.candidates import key_settings
    from chorus.evaluation.report import history_figure
    from chorus.features import map_names

    ts = settings.train
    commit = git_commit()
    stored = map_names(settings.features)
    example = np.stack([features.maps[m][:2] for m in stored], axis=1).astype(np.float32)
    split_manifest = stable_hash(sorted(features.segments["track_id"].unique().tolist()))
    config = {"candidate": key_settings(spec, ts), "train": ts.model_dump(mode="json"),
              "features": settings.features.model_dump(mode="json")}
    params = {"candidate": spec.name, "task": spec.registered_task(ts), "kind": spec.kind,
              **{f"train.{k}": v for k, v in ts.model_dump(mode="json", exclude={"svm", "hashing", "backbone"}).items()},
              **{f"candidate.{k}": v for k, v in trained.params.items() if k != "selected_maps"},
              "feature_config_hash": features.config_hash, "split_manifest_hash": split_manifest,
              "n_train_segments": trained.summary.get("n_train_segments")}
    if spec.family == "sklearn":
        params.update({f"svm.{k}": v for k, v in ts.svm.model_dump(mode="json").items()})
    if spec.task == "hash":
        params.update({f"hashing.{k}": v for k, v in ts.hashing.model_dump(mode="json").items()})
    pretext_corpus = None
    if spec.task == "pretext":
        params.update({f"backbone.{k}": v for k, v in ts.backbone.model_dump(mode="json").items()})
        if ts.backbone.corpus == "rendered":
            from chorus.datasets.pretext import STAMP_NAME

            stamp = json.loads((StateDir(training_source(settings, spec.task).state_dir).demo / STAMP_NAME).read_text())
            pretext_corpus = {k: v for k, v in stamp.items() if k not in ("demo", "backbone")}
            params.update({"pretext.key": stamp["key"], "pretext.tracks": stamp["tracks"], "pretext.works": stamp["works"],
                           "pretext.excluded_works": stamp["excluded_works"]})
    # Networks logged their epochs live; a baseline's one validation score is logged here.
    history = [] if trained.history else [{"epoch": 1, "valid_score": trained.summary.get("valid_score") or float("nan")}]
    figures = {}
    if trained.history:
        import matplotlib.pyplot as plt

        figures["training_curves.png"] = history_figure(trained.history)
    ref = registry.log_candidate(
        trained.scorer, name, key, params=params, history=history,
        tags={registry.CANDIDATE_TAG: spec.name, registry.TASK_TAG: spec.registered_task(ts),
              "chorus.feature_config_hash": features.config_hash, "chorus.git_commit": commit,
              "chorus.device": str(trained.summary.get("device")), "chorus.precision": str(trained.summary.get("precision"))},
        artifacts={"config.json": config, "labels.json": trained.scorer.contract.labels, "history.json": trained.history,
                   "summary.json": trained.summary, "candidate.json": trained.params,
                   "provenance.json": {"feature_config_hash": features.config_hash, "split_manifest_hash": split_manifest,
                                       "train_key": key, "git_commit": commit, "pretext_corpus": pretext_corpus}},
        input_example=example, figures=figures, run_id=run_id)
    for figure in figures.values():
        plt.close(figure)
    return ref


# --- promote ------------------------------------------------------------------------------


def gate_metrics(result: dict[str, Any], kind: str) -> dict[str, float]:
    """The flat metrics promotion rules name, from ``score_candidate``'s result."""
    if kind == "multi":
        return {"macro_pr_auc": result["value"]["mean"], "micro_pr_auc": result["micro_pr_auc"],
                "macro_roc_auc": result["macro_roc_auc"]}
    if kind == "hash":
        return {"map_at_10": result["value"]["mean"], "bit_balance": 1.0 - result["mean_abs_bit_mean"]}
    f1 = [c["f1"] for c in result["per_class"].values()]
    return {"accuracy": result["value"]["mean"], "balanced_accuracy": result["balanced_accuracy"],
            "macro_f1": float(sum(f1) / len(f1))}


def score_version(settings: ChorusSettings, name: str, version: int, features: Any, tracks: pd.DataFrame,
                  moods: Any) -> tuple[dict[str, float], float, str]:
    """Fresh test-split scores of a registered version on the current features and labels.
    Raises when the version cannot be scored here (other features, incompatible code)."""
    from chorus import registry
    from chorus.candidates import CATALOGUE, task_targets

    scorer = registry.load_scorer(name, version)
    scorer.contract.check_features(features.config_hash)
    spec = CATALOGUE[scorer.contract.candidate]
    targets = task_targets(spec.task, tracks, settings.train, moods)
    result = score_candidate(scorer, features, targets.splits[settings.evaluate.split], targets.labels, spec.kind,
                             200, settings.labels.seed)  # the gate uses point estimates: few bootstrap rounds
    return gate_metrics(result, spec.kind), float(result["baseline"]), spec.kind


def promote_stage(settings: ChorusSettings, dry_run: bool = False, trigger: str = "manual",
                  names: list[str] | None = None) -> StageSummary:
    """For each registered name with a challenger that is not the champion: score challenger and
    champion afresh on the current test split, decide by the name's rule, move aliases (unless a
    dry run) and audit. A challenger already decided against the same champion is not re-decided."""
    from mlflow.exceptions import MlflowException

    from chorus import promotion, registry
    from chorus.candidates import resolve_candidates
    from chorus.errors import StaleFeaturesError
    from chorus.features import load_features, map_names

    started = time.perf_counter()
    state = StateDir(settings.state_dir).create()
    registry.configure(settings.tracking_uri, state.mlflow_artifacts)
    ts = settings.train
    if names is None:
        names = sorted({ts.registered_name(s.registered_task(ts)) for s in resolve_candidates(list(ts.selected))
                        if s.kind != "pretext"})
    tracks = training_tracks(settings)
    moods = mood_labels(settings, tracks)
    features = None
    log_path = state.audit / "promotions.jsonl"
    decisions: dict[str, Any] = {}
    for name in names:
        challenger = registry.alias_version(name, promotion.CHALLENGER)
        champion = registry.alias_version(name, promotion.CHAMPION)
        if challenger is None or challenger == champion:
            decisions[name] = {"decided": False, "reason": "no challenger" if challenger is None else "challenger is champion"}
            continue
        tags = registry.version_tags(name, challenger)
        if not dry_run and tags.get("chorus.promotion.champion_before") == str(champion) and \
                tags.get("chorus.promotion.decision") in ("promoted", "refused"):
            decisions[name] = {"decided": False, "reason": f"v{challenger} already {tags['chorus.promotion.decision']}"}
            continue
        if features is None:
            ids = tracks.loc[tracks["split"] == settings.evaluate.split, "track_id"].tolist()
            features = load_features(state.features, settings.features, ids, maps=map_names(settings.features))
        challenger_metrics, baseline, kind = score_version(settings, name, challenger, features, tracks, moods)
        rule = settings.promote.rule_for(name, kind)
        champion_metrics, problem = None, None
        if champion is not None:
            try:
                champion_metrics, _, _ = score_version(settings, name, champion, features, tracks, moods)
            except (StaleFeaturesError, ImportError, AttributeError, KeyError, MlflowException) as exc:
                problem = (f"champion v{champion} cannot be scored on the current data ({type(exc).__name__}: {exc}); "
                           "it is judged against the trivial baseline instead")
        decision = promotion.decide(name, challenger, challenger_metrics, baseline, rule, champion, champion_metrics, problem)
        decision.dry_run, decision.trigger = dry_run, trigger
        promotion.apply(decision, log_path)
        decisions[name] = {"decided": True, **decision.as_dict()}
    acted = [d for d in decisions.values() if d["decided"]]
    counts = {"decisions": decisions, "promoted": sum(d["promote"] and not d["dry_run"] for d in acted),
              "refused": sum(not d["promote"] for d in acted)}
    return StageSummary("promote", not acted, {"audit": str(log_path)}, counts, time.perf_counter() - started)


def rollback_stage(settings: ChorusSettings, name: str) -> dict[str, Any]:
    from chorus import promotion, registry

    state = StateDir(settings.state_dir).create()
    registry.configure(settings.tracking_uri, state.mlflow_artifacts)
    return promotion.rollback(name, state.audit / "promotions.jsonl").as_dict()


# --- tag ----------------------------------------------------------------------------------


def tag_stage(settings: ChorusSettings, paths: list[str], model: str | None = None, alias: str = "champion",
              out: str | None = None) -> StageSummary:
    """Predictions of ``models:/<model>@<alias>`` for audio files or folders, to Parquet
    (default ``<state>/tags/<model>-v<N>-<files digest>.parquet``)."""
    from chorus import registry
    from chorus.io import file_sha256
    from chorus.tagging import audio_files, tag_files

    started = time.perf_counter()
    state = StateDir(settings.state_dir).create()
    registry.configure(settings.tracking_uri, state.mlflow_artifacts)
    name = model or settings.train.model_name
    files = audio_files([Path(p).expanduser() for p in paths])
    if not files:
        from chorus.errors import InputError

        raise InputError(", ".join(paths), "no audio files found")
    table = tag_files(files, name, alias)
    version = int(table["version"].iloc[0])
    digest = stable_hash([[str(f), file_sha256(f)] for f in files])
    target = Path(out).expanduser().resolve() if out else state.root / "tags" / f"{name}-v{version}-{digest}.parquet"
    write_parquet(table, target)
    return StageSummary("tag", False, {"predictions": str(target)},
                        {"files": len(files), "tagged": int(table["problem"].isna().sum()), "model": f"{name} v{version}"},
                        time.perf_counter() - started)


# --- search -------------------------------------------------------------------------------


def search_models(settings: ChorusSettings) -> tuple[Any, Any]:
    """The two registered versions an index is built for: the semantic model's and the hash
    model's, at ``search.alias`` (champion by default)."""
    from chorus.search.encode import resolve_version

    semantic = settings.search.semantic_model or settings.train.model_name
    hashing = settings.train.registered_name(f"hash-{settings.search.hash_bits}")
    return resolve_version(semantic, settings.search.alias), resolve_version(hashing, settings.search.alias)


def index_folder(state: StateDir, semantic: Any, hashing: Any) -> Path:
    return state.search / f"{semantic.name}-v{semantic.version}+{hashing.name}-v{hashing.version}"


def index_key(settings: ChorusSettings, semantic: Any, hashing: Any) -> str:
    """What a search index depends on: both model versions, the stored features, the search settings."""
    from chorus.features import features_key

    return stable_hash([str(semantic), str(hashing), features_key(StateDir(settings.state_dir).features, settings.features),
                        settings.search.config_hash()])


def _index_on_disk(settings: ChorusSettings, state: StateDir) -> tuple[Any, Any, Path, str, dict[str, Any] | None]:
    """The models at ``search.alias``, their index folder, the key an index of them must carry,
    and what the folder's index.json records (None: not built). InputError: no such model."""
    from chorus.search.index import read_index_meta

    semantic, hashing = search_models(settings)
    folder = index_folder(state, semantic, hashing)
    return semantic, hashing, folder, index_key(settings, semantic, hashing), read_index_meta(folder)


def current_index_key(settings: ChorusSettings) -> str | None:
    """The index's key when the index on disk belongs to the models now at ``search.alias`` and
    the current features and settings, else None (it must be built, or there is no model yet)."""
    from chorus import registry
    from chorus.errors import InputError

    state = StateDir(settings.state_dir)
    registry.configure(settings.tracking_uri, state.mlflow_artifacts)
    try:
        _, _, _, key, meta = _index_on_disk(settings, state)
    except InputError:
        return None
    return key if meta is not None and meta.get("key") == key else None


def index_stage(settings: ChorusSettings, validator: Any = None, if_models: bool = False) -> StageSummary:
    """Semantic vectors and hash codes of every track of the corpus, from the stored features,
    for the models at ``search.alias``; faiss indexes; then the degraded-copy check. Skipped when
    the index on disk was built from the same versions, features and settings, and (``if_models``,
    as in the pipeline) when a model has no version at the alias yet."""
    from chorus import registry
    from chorus.errors import InputError
    from chorus.features import load_features
    from chorus.search import SearchIndex
    from chorus.search.encode import TrackEncoder

    started = time.perf_counter()
    state = StateDir(settings.state_dir).create()
    registry.configure(settings.tracking_uri, state.mlflow_artifacts)
    try:
        semantic, hashing, folder, key, meta = _index_on_disk(settings, state)
    except InputError as missing:
        if not if_models:
            raise
        log.warning("no search index: %s", missing)
        return StageSummary("index", True, {}, {"reason": str(missing)}, time.perf_counter() - started)
    if meta is not None and meta.get("key") == key:
        return StageSummary("index", True, {"index": str(folder)}, _index_counts(meta), time.perf_counter() - started)
    encoder = TrackEncoder.from_registry(semantic, hashing)
    if encoder.features.config_hash() != settings.features.config_hash():
        from chorus.errors import StaleFeaturesError

        raise StaleFeaturesError(f"{semantic} was trained on features {encoder.features.config_hash()}, the corpus's are "
                                 f"{settings.features.config_hash()}: retrain it (chorus run) or set the feature settings back")
    features = load_features(state.features, settings.features, maps=encoder.maps)
    track_ids, vectors, codes = encoder.encode_segments(features.maps, features.segments["track_id"].to_numpy())
    search = settings.search
    meta = {"key": key, "name": folder.name, "semantic": semantic.__dict__, "hash": hashing.__dict__,
            "feature_config_hash": settings.features.config_hash(), "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    index = SearchIndex.build(track_ids, vectors, codes, meta, search.approximate_above, search.ivf_lists, search.ivf_probe)
    tracks = load_tracks(settings)
    (validator or shared_validator(settings)).validate(
        with_known_tracks(index.checks(), tracks["track_id"]), "search_index",
        {"tracks": tracks["track_id"].nunique(), "code_bytes": index.bits // 8})
    index.meta["check"] = degraded_check(settings, index, encoder, tracks)
    index.save(folder)
    log.info("index %s: %d tracks; original in top %d from degraded copies: %s", folder.name, len(index),
             search.check.k, index.meta["check"]["worst"])
    return StageSummary("index", False, {"index": str(folder)}, _index_counts(index.meta), time.perf_counter() - started)


def _index_counts(meta: dict[str, Any]) -> dict[str, Any]:
    return {"tracks": meta["tracks"], "bits": meta["bits"], "dims": meta["dims"],
            "semantic": f"{meta['semantic']['name']} v{meta['semantic']['version']}",
            "hash": f"{meta['hash']['name']} v{meta['hash']['version']}",
            "degraded_found_in_top_k": meta["check"]["worst"]}


def degraded_check(settings: ChorusSettings, index: Any, encoder: Any, tracks: pd.DataFrame) -> dict[str, Any]:
    """Every corpus track (or ``search.check.tracks`` of them) queried with degraded copies of its
    audio; the copies' features are extracted on Dask like the corpus's."""
    from distributed import Client

    from chorus.compute import dask_scheduler
    from chorus.search.degraded import check_tracks, degraded_maps, degraded_query_check

    check = settings.search.check
    tracks = tracks.set_index("track_id")
    chosen = check_tracks([t for t in index.track_ids if t in tracks.index], check)
    uris = tracks.loc[chosen, "uri"].tolist()
    n = len(chosen)
    with dask_scheduler(settings.features) as address, Client(address) as client:
        futures = client.map(degraded_maps, chosen, uris, [encoder.features] * n, [check] * n, [encoder.maps] * n, pure=False)
        copies = dict(zip(chosen, client.gather(futures), strict=True))
    return {**degraded_query_check(index, encoder, copies, check.k, settings.search.rerank_candidates),
            "settings": check.model_dump(mode="json")}


def current_index_meta(settings: ChorusSettings) -> dict[str, Any] | None:
    """What the index of the models now at ``search.alias`` records (versions, check), if built."""
    from chorus.errors import ChorusError
    from chorus.search.index import read_index_meta

    try:
        semantic, hashing = search_models(settings)
    except ChorusError:
        return None
    return read_index_meta(index_folder(StateDir(settings.state_dir), semantic, hashing))


def load_index(settings: ChorusSettings) -> Any:
    """The index of the models now at ``search.alias`` (its folder names both versions; a clear
    error when it is not built)."""
    from chorus import registry
    from chorus.search import SearchIndex

    state = StateDir(settings.state_dir)
    registry.configure(settings.tracking_uri, state.mlflow_artifacts)
    return SearchIndex.load(index_folder(state, *search_models(settings)))


def track_labels(settings: ChorusSettings) -> pd.DataFrame:
    """Per track: its label columns from the corpus and its globally voted moods (when voted)."""
    from chorus.ingest import TRACK_COLUMNS

    tracks = load_tracks(settings)
    table = tracks[["track_id", *[c for c in tracks.columns if c not in TRACK_COLUMNS]]].set_index("track_id")
    voted = voted_global_labels(settings)
    if voted:
        table["voted_moods"] = table.index.map(lambda t: ", ".join(voted.get(t, [])))
    return table


def search_stage(settings: ChorusSettings, queries: list[str], k: int | None = None, mode: str | None = None,
                 out: str | None = None) -> StageSummary:
    """Nearest tracks of each query, an audio file or folder (encoded with the index's models and
    their feature settings) or a track id (or a 6+ character prefix of one) of the corpus (left out
    of its own results); to Parquet
    (default ``<state>/search/results/<digest>.parquet``)."""
    import numpy as np

    from chorus.errors import InputError
    from chorus.search.encode import ModelVersion, TrackEncoder

    started = time.perf_counter()
    state = StateDir(settings.state_dir).create()
    k, mode = k or settings.search.k, mode or settings.search.mode
    index = load_index(settings)
    from chorus.tagging import audio_files

    # a folder stands for the audio files under it
    queries = [q for query in queries for q in ([str(f) for f in audio_files([Path(query).expanduser()])]
                                                 if Path(query).expanduser().is_dir() else [query])]
    encoder: Any = None
    vectors, codes, exclude = [], [], []
    for query in queries:
        path = Path(query).expanduser()
        if path.is_file():
            if encoder is None:
                encoder = TrackEncoder.from_registry(ModelVersion(**index.meta["semantic"]), ModelVersion(**index.meta["hash"]))
            vector, code = encoder.encode_file(path.resolve())
            position = None
        else:
            matches = [i for i, t in enumerate(index.track_ids) if str(t).startswith(query)] if len(query) >= 6 else []
            if len(matches) != 1:
                rule = "neither an audio file nor a track id of the index" if not matches else "matches several track ids"
                raise InputError(query, rule, f"index {index.meta['name']}: {len(index)} tracks")
            position = matches[0]
            vector, code = index.vectors[position], index.codes[position]
        vectors.append(vector), codes.append(code), exclude.append(position)
    hits = index.search(np.stack(vectors), np.stack(codes), k, mode, settings.search.rerank_candidates, exclude=exclude)
    hits.insert(0, "like", [queries[q] for q in hits["query"]])
    hits = hits.drop(columns="query").join(track_labels(settings), on="track_id")
    hits["mode"], hits["index"] = mode, index.meta["name"]
    digest = stable_hash([index.meta["key"], queries, k, mode])
    target = Path(out).expanduser().resolve() if out else state.search / "results" / f"{digest}.parquet"
    write_parquet(hits, target)
    return StageSummary("search", False, {"results": str(target)},
                        {"queries": len(queries), "k": k, "mode": mode, "index": index.meta["name"]},
                        time.perf_counter() - started)


# --- evaluate -----------------------------------------------------------------------------


def score_candidate(scorer: Any, features: Any, targets: dict[str, Any], labels: list[str], kind: str,
                    rounds: int, seed: int, k: int = 10) -> dict[str, Any]:
    """Track-level test metrics of one scorer with 95% bootstrap intervals, beside the trivial
    baseline of its task."""
    import numpy as np

    from chorus.evaluation.metrics import bootstrap_interval, multilabel_metrics
    from chorus.evaluation.retrieval import average_precision_at_k, chance_precision, hamming_distance, top_k
    from chorus.training import segment_split, track_mean, track_targets

    split = segment_split(features, scorer.contract.stored_maps, targets)
    if len(split) == 0:
        raise ValueError(f"{scorer.contract.candidate}: no test segments")
    scores = scorer.scores(split.x)
    track_ids, per_track = track_mean(scores, split.track_ids)
    truth = track_targets(split)
    if kind == "multi":
        metrics = multilabel_metrics(truth, per_track, labels, rounds, seed)
        return {"metric": "macro PR-AUC", "value": metrics["macro_pr_auc"], "baseline_name": "prevalence",
                "baseline": metrics["prevalence_baseline"], **metrics, "track_ids": track_ids.tolist(),
                "arrays": (truth, per_track)}
    if kind == "hash":
        ap = average_precision_at_k(top_k(hamming_distance(per_track), k), truth)
        chance = chance_precision(truth)
        bit_balance = float(np.abs(np.where(per_track >= 0, 1.0, -1.0).mean(0)).mean())
        return {"metric": f"Hamming mAP@{k}", "value": bootstrap_interval(lambda i: float(ap[i].mean()), len(ap), rounds, seed),
                "baseline_name": "random ranking (precision)", "baseline": chance, "bits": int(per_track.shape[1]),
                "mean_abs_bit_mean": bit_balance, "n": int(len(truth))}
    # Outputs are indexed by the scorer's own classes, targets by the current ones: a champion
    # trained when the class list differed is compared by name, not by position.
    actual = [labels[t] for t in truth]
    predicted = [scorer.contract.labels[p] for p in per_track.argmax(1)]
    correct = np.array([a == p for a, p in zip(actual, predicted, strict=True)], dtype=float)
    majority = float(np.bincount(truth).max() / len(truth))
    from chorus.evaluation import classification_metrics

    cm = classification_metrics(actual, predicted, labels)
    return {"metric": "accuracy", "value": bootstrap_interval(lambda i: float(correct[i].mean()), len(correct), rounds, seed),
            "baseline_name": "majority class", "baseline": majority, **cm.as_dict(), "classification": cm}


def evaluate_stage(settings: ChorusSettings, candidates: dict[str, dict[str, Any]] | None = None) -> StageSummary:
    """Score the candidates of a training (default: the champions) on the held-out split; write
    ``reports/<model>-v<N>/report.html`` for the single-label champion and ``reports/metrics.json``
    with every candidate; log both to MLflow."""

    from chorus import registry
    from chorus.candidates import CATALOGUE, task_targets
    from chorus.evaluation import render_report
    from chorus.features import features_key, load_features, map_names

    started = time.perf_counter()
    state = StateDir(settings.state_dir).create()
    es, ts = settings.evaluate, settings.train
    multi = es.subject == "multi"
    # the model the report describes: the single-label task's, or the multi-label task's
    subject_name, task = (ts.registered_name(ts.mood_task), ts.mood_task) if multi else (ts.model_name, ts.task)
    registry.configure(settings.tracking_uri, state.mlflow_artifacts)
    champion = registry.alias_version(subject_name, es.alias)
    candidates = candidates or {}
    tracks = training_tracks(settings)
    test_ids = tracks.loc[tracks["split"] == es.split, "track_id"].tolist()
    features = load_features(state.features, settings.features, test_ids, maps=map_names(settings.features))
    subject, scorer, unscorable = _report_subject(subject_name, champion, candidates, features.config_hash)
    voting = read_metrics(state.reports / "metrics.json").get("voting")
    search_check = current_index_meta(settings)
    moods = mood_labels(settings, tracks)
    evaluated = {k: {"registered": v["registered"], "version": v["version"]} for k, v in sorted(candidates.items())
                 if v.get("kind") != "pretext"}
    key = stable_hash({"champion": champion, "subject": subject, "candidates": evaluated, "evaluate": es.config_hash(),
                       "voting": voting, "features": features_key(state.features, settings.features),
                       "search": (search_check or {}).get("key"),
                       "moods": moods.digest(),
                       "tracks": stable_hash(tracks[[c for c in ("track_id", "split", ts.task) if c in tracks.columns]]
                                             .astype(str).values.tolist())})
    folder = state.reports / f"{subject_name}-v{subject}"
    report_path, model_metrics_path, summary_path = folder / "report.html", folder / "metrics.json", state.reports / "metrics.json"
    outputs = {"report": str(report_path), "metrics": str(summary_path)}
    if model_metrics_path.exists() and report_path.exists():
        previous = json.loads(model_metrics_path.read_text())
        if previous.get("key") == key:
            _update_summary(summary_path, previous)
            return StageSummary("evaluate", True, outputs, {previous.get("headline", "accuracy"): previous[previous.get("headline", "accuracy")],
                                                            "version": subject},
                                time.perf_counter() - started)

    rows: list[dict[str, Any]] = []
    per_candidate: dict[str, Any] = {}
    hash_scorers: dict[str, Any] = {}
    figures: list[tuple[str, str]] = []
    results: dict[str, dict[str, Any]] = {}
    targets_of: dict[str, Any] = {}
    for name, info in evaluated.items():
        spec = CATALOGUE[name]
        candidate = registry.load_scorer(info["registered"], info["version"])
        candidate.contract.check_features(features.config_hash)
        if spec.task not in targets_of:
            targets_of[spec.task] = task_targets(spec.task, tracks, ts, moods)
        targets = targets_of[spec.task]
        result = score_candidate(candidate, features, targets.splits[es.split], targets.labels, spec.kind,
                                 settings.labels.bootstrap, settings.labels.seed)
        results[name] = result
        if spec.task == "mood" and "mood" in tracks.columns:
            result["planted_mood"] = _planted_mood_scores(candidate, features, tracks, es.split, settings)
        if spec.kind == "hash":
            hash_scorers[name] = candidate
        if "arrays" in result:
            from chorus.evaluation.report import multilabel_curves_plot

            figures.append((f"{name}: PR and ROC curves, per-label PR-AUC", multilabel_curves_plot(*result["arrays"], targets.labels)))
        per_candidate[name] = {"task": spec.registered_task(ts), "registered": info["registered"], "version": info["version"],
                               **{k: v for k, v in result.items() if k not in ("track_ids", "confusion", "per_class", "arrays", "classification")},
                               **({"confusion": result["confusion"], "per_class": result["per_class"]} if "confusion" in result else {})}
        rows.append({"candidate": name, "registered": f"{info['registered']} v{info['version']}", "task": spec.registered_task(ts),
                     "metric": result["metric"], "value": result["value"], "baseline_name": result["baseline_name"],
                     "baseline": result["baseline"], "valid_score": candidates[name].get("valid_score") or float("nan")})

    # The report's subject is scored like every candidate (once, if it is one of them).
    subject_result = next((results[n] for n, info in evaluated.items()
                           if info["registered"] == subject_name and info["version"] == subject), None)
    if subject_result is None:
        family = "mood" if multi else "style"
        targets = targets_of.get(family) or task_targets(family, tracks, ts, moods)
        subject_result = score_candidate(scorer, features, targets.splits[es.split], targets.labels,
                                         "multi" if multi else "single", settings.labels.bootstrap, settings.labels.seed)
    run_id = registry.run_id_of(subject_name, subject)
    history = _run_history(run_id)
    protocol = evaluation_protocol(settings, tracks, multi)
    facts = {
        "model": f"{subject_name} version {subject} ({scorer.contract.candidate})", "task": task, "protocol": protocol["name"],
        "split": es.split, "aliases": f"champion = v{champion}" if champion else "no champion", "MLflow run": run_id,
        "promotion": _last_promotion(state, subject_name), "feature config hash": features.config_hash,
        "evaluation key": key, "git commit": git_commit(),
    }
    retrieval = {} if multi or ts.task not in tracks.columns else _retrieval_and_compression(
        settings, state, tracks, features, scorer, hash_scorers)
    if retrieval:
        figures.append(("Semantic vectors in 2-D", retrieval.pop("plot")))
    if multi:
        headline = {"metric": "macro_pr_auc", "macro_pr_auc": subject_result["macro_pr_auc"]["mean"],
                    "macro_roc_auc": subject_result["macro_roc_auc"], "n": subject_result["n"],
                    "prevalence_baseline": subject_result["prevalence_baseline"],
                    "labels": list(scorer.contract.labels)}
        summary_metrics = {k: v for k, v in subject_result.items() if k not in ("track_ids", "arrays", "value", "metric",
                                                                              "baseline", "baseline_name")}
        mlflow_metrics = {f"{es.split}_macro_pr_auc": headline["macro_pr_auc"], f"{es.split}_macro_roc_auc": headline["macro_roc_auc"]}
        notes = [f"Prevalence baseline (macro PR-AUC of constant scores): {headline['prevalence_baseline']:.3f}; "
                 "ROC-AUC of constant scores is 0.5."]
    else:
        metrics = subject_result["classification"]
        headline = {"metric": "accuracy", **metrics.as_dict()}
        summary_metrics = metrics.as_dict()
        mlflow_metrics = {f"{es.split}_accuracy": metrics.accuracy, f"{es.split}_balanced_accuracy": metrics.balanced_accuracy}
        notes = [f"Majority-class baseline: {metrics.majority_baseline:.3f}."]
    html = render_report(f"chorus evaluation: {subject_name} v{subject}", facts, subject_result.get("classification"), history,
                         tagging=subject_result if multi else None, protocol=protocol, voting=voting,
                         retrieval=retrieval, search=search_check, figures=figures,
                         promotion=_latest_decision(state, subject_name), candidates=rows, notes=[
        "Scores are on the demo corpus unless configured otherwise; the article's reported figures are on data we do not have.",
        *notes, *([unscorable] if unscorable else []),
    ])
    write_text_atomic(report_path, html)
    record = {"key": key, "run_id": run_id, "model": subject_name, "version": subject, "champion": champion, "task": task,
              "kind": "multi" if multi else "single", "headline": headline["metric"], "protocol": protocol,
              "candidate": scorer.contract.candidate, "split": es.split, **summary_metrics, **headline,
              "candidates": per_candidate, "retrieval": retrieval, "search": search_check}
    write_json_atomic(model_metrics_path, record)
    registry.log_report(run_id, [report_path, model_metrics_path], mlflow_metrics)
    _update_summary(summary_path, record)
    return StageSummary("evaluate", False, outputs, {headline["metric"]: round(headline[headline["metric"]], 4),
                                                     "n": headline["n"], "version": subject,
                                                     "candidates": {k: round(v["value"]["mean"], 4) for k, v in per_candidate.items()}},
                        time.perf_counter() - started)


# Published figures for context in the report, clearly other work: (dataset source, kind) -> rows.
PUBLISHED_REFERENCES: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("mtat", "multi"): [{"work": "Won et al. 2020, short-chunk CNN + residual, MagnaTagATune top-50",
                         "macro ROC-AUC": 0.913, "macro PR-AUC": 0.461}],
    ("jamendo", "multi"): [{"work": "MediaEval 2019 Emotion and Theme Recognition, best submission (mood/theme)",
                            "macro ROC-AUC": 0.773, "macro PR-AUC": 0.155}],
    ("gtzan", "single"): [{"work": "published CNN result on the GTZAN fault-filtered split (Kereliuk, Sturm and Larsen 2015)",
                           "accuracy": 0.797}],
}


def evaluation_protocol(settings: ChorusSettings, tracks: pd.DataFrame, multi: bool) -> dict[str, Any]:
    """How the subject is judged: the dataset's usual protocol, named, with published figures of
    other work on the same dataset beside ours (never as ours)."""
    sources = sorted(set(tracks["source"].astype(str))) if "source" in tracks.columns else []
    source = sources[0] if len(sources) == 1 else "mixed"
    if multi:
        name = ("tagging: macro ROC-AUC and PR-AUC over the task's labels (per-label table too); "
                "track-level predictions = mean of segment predictions")
    else:
        name = ("classification: accuracy and confusion matrix; track-level predictions = mean of segment "
                "probabilities")
    kind = "multi" if multi else "single"
    return {"name": name, "dataset": source, "published": PUBLISHED_REFERENCES.get((source, kind), [])}


def _retrieval_and_compression(settings: ChorusSettings, state: StateDir, tracks: pd.DataFrame, features: Any,
                               scorer: Any, hash_scorers: dict[str, Any]) -> dict[str, Any]:
    """Retrieval on the held-out segments (semantic vectors of the reported style model, codes of
    each hash model, LSH and PCA+rotation of the semantic vectors at the same bits; relevant =
    same style) and the compression curve of the semantic vectors (PCA fit on train)."""
    import numpy as np

    from chorus.candidates import task_targets
    from chorus.evaluation.retrieval import compression_curve, retrieval_table
    from chorus.features import load_features, map_names
    from chorus.training import segment_split

    targets = task_targets("style", tracks, settings.train)
    test = segment_split(features, scorer.contract.stored_maps, targets.splits[settings.evaluate.split])
    train_ids = list(targets.splits["train"])
    train_features = load_features(state.features, settings.features, train_ids, maps=map_names(settings.features))
    train = segment_split(train_features, scorer.contract.stored_maps, targets.splits["train"])
    if len(test) < 2 or len(train) < 2:  # a query needs at least one other item
        return {}
    train_vectors, test_vectors = scorer.embed(train.x), scorer.embed(test.x)
    codes = {name: h.scores(test.x) for name, h in sorted(hash_scorers.items())}
    table = retrieval_table(train_vectors, test_vectors, test.y, test.track_ids, codes, k=10, seed=settings.labels.seed,
                            rerank_candidates=settings.search.rerank_candidates)
    dims = [d for d in (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 1690) if d <= train_vectors.shape[1]]
    table["compression"] = compression_curve(train_vectors, train.y, test_vectors, test.y, dims, settings.labels.seed)
    table["semantic_model"] = f"{scorer.contract.candidate} (penultimate layer, {train_vectors.shape[1]} dims)"
    from chorus.evaluation.report import embedding_plot

    table["plot"] = embedding_plot(test_vectors, [targets.labels[int(i)] for i in test.y])
    table["classes"] = int(len(np.unique(test.y)))
    return table


def _latest_decision(state: StateDir, name: str) -> dict[str, Any] | None:
    from chorus.promotion import read_audit

    rows = [r for r in read_audit(state.audit / "promotions.jsonl") if r["model"] == name]
    return rows[-1] if rows else None


def _last_promotion(state: StateDir, name: str) -> str:
    last = _latest_decision(state, name)
    if last is None:
        return "no decision yet"
    from chorus.promotion import verdict

    return f"{last['time']}: v{last['challenger']} {verdict(last)} ({last['reason']})"


def _report_subject(name: str, champion: int | None, candidates: dict[str, dict[str, Any]],
                    config_hash: str) -> tuple[int, Any, str | None]:
    """The version the report describes: the champion, or, when the champion cannot be scored on
    the current features (trained on other features, or by an incompatible chorus), this run's
    best-validated candidate of the same name, with the reason."""
    from mlflow.exceptions import MlflowException

    from chorus import registry
    from chorus.errors import InputError, StaleFeaturesError

    if champion is None:
        reason = f"{name} has no champion (the promotion gate has not promoted a version)."
    else:
        try:
            scorer = registry.load_scorer(name, champion)
            scorer.contract.check_features(config_hash)
            return champion, scorer, None
        except (StaleFeaturesError, ImportError, AttributeError, MlflowException) as exc:
            reason = f"The champion (v{champion}) cannot be scored on the current features: {exc}"
    mine = [row for row in candidates.values() if row["registered"] == name]
    if not mine:
        raise InputError(f"models:/{name}@champion", reason)
    best = max(mine, key=lambda r: r.get("valid_score") if r.get("valid_score") is not None else -1.0)
    log.warning("%s; reporting on this run's best candidate v%s instead", reason, best["version"])
    return best["version"], registry.load_scorer(name, best["version"]), reason + f" This report describes v{best['version']}."


def _planted_mood_scores(scorer: Any, features: Any, tracks: pd.DataFrame, split: str, settings: ChorusSettings) -> dict[str, Any]:
    """The mood tagger against the demo's planted mood (one true mood per track): macro PR-AUC of
    the one-hot planted mood and top-1 accuracy, with chance beside them."""
    import numpy as np

    from chorus.evaluation.metrics import bootstrap_interval, macro_average_precision
    from chorus.training import segment_split, track_mean, track_targets

    chosen = tracks[(tracks["split"] == split) & tracks["mood"].isin(MOODS)]
    hot = {t: np.isin(MOODS, [m]).astype(np.float32) for t, m in zip(chosen["track_id"], chosen["mood"], strict=True)}
    part = segment_split(features, scorer.contract.stored_maps, hot)
    if len(part) == 0:
        return {}
    _, per_track = track_mean(scorer.scores(part.x), part.track_ids)
    truth = track_targets(part)
    top1 = (per_track.argmax(1) == truth.argmax(1)).astype(float)
    rounds, seed = settings.labels.bootstrap, settings.labels.seed
    return {"n": int(len(truth)),
            "macro_pr_auc": bootstrap_interval(lambda i: macro_average_precision(truth[i], per_track[i]), len(truth), rounds, seed),
            "prevalence_baseline": float(truth[:, truth.sum(0) > 0].mean(0).mean()),
            "top1_accuracy": bootstrap_interval(lambda i: float(top1[i].mean()), len(top1), rounds, seed),
            "chance_top1": float(1 / len(MOODS))}


def _run_history(run_id: str) -> list[dict[str, float]]:
    from mlflow import MlflowClient

    client = MlflowClient()
    rows: dict[int, dict[str, float]] = {}
    for name in ("train_loss", "valid_score"):
        for metric in client.get_metric_history(run_id, name):
            rows.setdefault(metric.step, {"epoch": metric.step})[name] = metric.value
    return [rows[k] for k in sorted(rows)]


def _update_summary(path: Path, record: dict[str, Any]) -> None:
    """reports/metrics.json: {"run_id": ..., "models": {name: {task, accuracy, ...}}}."""
    summary = read_metrics(path)
    summary["run_id"] = record["run_id"]
    headline = ("accuracy", "balanced_accuracy", "majority_baseline", "classes", "confusion") \
        if record.get("kind", "single") == "single" else ("macro_pr_auc", "macro_roc_auc", "prevalence_baseline", "labels")
    summary.setdefault("models", {})[record["model"]] = {
        "task": record["task"], "version": record["version"], "run_id": record["run_id"], "split": record["split"],
        "n": record["n"], **{k: record[k] for k in headline}, "candidate": record.get("candidate"),
        "protocol": (record.get("protocol") or {}).get("name"),
        "report": str(path.parent / f"{record['model']}-v{record['version']}" / "report.html"),
    }
    if record.get("candidates"):
        summary["candidates"] = record["candidates"]
    write_json_atomic(path, summary)
