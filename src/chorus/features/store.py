"""Feature storage: shards of segments as fixed-shape float32 Parquet, planned by content hash,
written to a temporary file, validated, renamed into place; the index of which shard serves each
track; loading a feature set back."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from chorus.config import FeatureSettings, stable_hash
from chorus.features.backend import extractor_for
from chorus.features.dsp import (
    DB_MAX,
    DB_REFERENCE,
    FEATURE_SCHEMA_VERSION,
    MAPS,
    MFCC_STATS,
    TrackFeatures,
    map_names,
)
from chorus.io import durable_replace, read_meta, temp_path_beside, with_meta, write_json_atomic


def fixed_size_column(blocks: list[np.ndarray], size: int) -> pa.ChunkedArray:
    """Row blocks as one ``fixed_size_list<float32>[size]`` column, a chunk per block over the
    blocks' own memory (no concatenated copy of a shard's tensors).

    Parameters
    ----------
    blocks : list of np.ndarray, each shape (rows, ...) with ``size`` values per row
    size : int; values per row

    Returns
    -------
    pa.ChunkedArray : sum(rows) rows
    """
    chunks = []
    for block in blocks:
        rows = np.ascontiguousarray(block, np.float32).reshape(len(block), -1)
        if rows.shape[1] != size:
            raise ValueError(f"a block of shape {block.shape} does not have {size} values per row")
        chunks.append(pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1), pa.float32()), size))
    return pa.chunked_array(chunks, pa.list_(pa.float32(), size))


def tensor_rows(column: pa.ChunkedArray) -> np.ndarray:
    """A ``fixed_size_list`` column as an array of shape (rows, list_size)."""
    column = column.combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)


def features_table(items: list[TrackFeatures], settings: FeatureSettings) -> pa.Table:
    h, w = settings.n_mels, settings.segment_frames
    config_hash = settings.config_hash()
    columns: dict[str, Any] = {
        "track_id": pa.array([i.track_id for i in items for _ in range(i.segments)], pa.string()),
        "segment": pa.array([n for i in items for n in range(i.segments)], pa.int32()),
        "start_s": pa.array([float(x) for i in items for x in i.starts_s], pa.float32()),
        "padded": pa.array([i.padded for i in items for _ in range(i.segments)], pa.bool_()),
        "config_hash": pa.array([config_hash] * sum(i.segments for i in items), pa.string()),
    }
    for name in map_names(settings):
        columns[name] = fixed_size_column([i.maps[name] for i in items], h * w)
    columns["mfcc_stats"] = fixed_size_column([i.mfcc_stats for i in items], 6 * settings.n_mfcc)
    return pa.table(columns)


def segment_checks(table: pa.Table, items: list[TrackFeatures], settings: FeatureSettings) -> pd.DataFrame:
    """One row per segment of ``table`` with what the shard's expectation suite checks: the stored
    tensor sizes, finiteness, dB range (from the items' per-segment summaries, in table order). GX
    validates this small frame, not megabytes of floats."""
    out = table.select(["track_id", "segment"]).to_pandas()
    for name in [*map_names(settings), "mfcc_stats"]:
        out[f"size_{name}"] = table.schema.field(name).type.list_size
    summary = np.concatenate([i.checks for i in items]) if items else np.zeros((0, 3))
    if len(summary) != table.num_rows:
        raise ValueError(f"{len(summary)} segment summaries for {table.num_rows} rows")
    out["finite"] = summary[:, 0].astype(bool)
    out["min_db"], out["max_db"] = summary[:, 1], summary[:, 2]
    return out


def segment_check_params(settings: FeatureSettings, track_ids: list[str]) -> dict[str, Any]:
    """Values for the ``feature_segments`` expectation suite (flat: they are GX run parameters)."""
    params: dict[str, Any] = {f"size_{name}": settings.n_mels * settings.segment_frames for name in map_names(settings)}
    params.update({"size_mfcc_stats": 6 * settings.n_mfcc, "db_floor": settings.db_floor, "db_max": DB_MAX})
    if track_ids:
        params["tracks"] = len(set(track_ids))
    return params


def feature_metadata(settings: FeatureSettings, key: str) -> dict[str, Any]:
    h, w = settings.n_mels, settings.segment_frames
    return {
        "key": key,
        "feature_schema_version": FEATURE_SCHEMA_VERSION,
        "config_hash": settings.config_hash(),
        "config": settings.model_dump(mode="json", exclude=set(settings._runtime_fields)),
        "shape": {**{name: [h, w] for name in map_names(settings)}, "mfcc_stats": [6 * settings.n_mfcc]},
        "mfcc_stats_order": list(MFCC_STATS),
        "sample_rate": settings.sample_rate,
        "hop_length": settings.hop_length,
        "n_mels": settings.n_mels,
        "db_reference": DB_REFERENCE,
        "libraries": {"librosa": version("librosa"), "numpy": np.__version__, "scipy": version("scipy"),
                      "bottleneck": version("bottleneck"), "pyarrow": pa.__version__},
    }


def feature_dir(root: Path, settings: FeatureSettings) -> Path:
    """Each feature configuration has its own folder, so configurations never overwrite each other."""
    return root / settings.config_hash()


@dataclass(frozen=True)
class Shard:
    key: str
    path: Path
    tracks: pd.DataFrame  # track_id, uri, sha256


@dataclass(frozen=True)
class StagedShard:
    """A shard written to a temporary file, awaiting validation before it is renamed into place."""

    shard: Shard
    tmp_path: Path
    checks: pd.DataFrame
    rejected: list[dict[str, str]]
    segments: int
    audio_seconds: float
    track_seconds: dict[str, float] = field(default_factory=dict)


def _shard_metas(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """(file name, chorus metadata) of every committed shard of ``folder``, in name order."""
    found = []
    for path in sorted(folder.glob("shard-*.parquet")):
        meta = read_meta(path)
        if meta and "tracks" in meta:
            found.append((path.name, meta))
    return found


def _holders(metas: list[tuple[str, dict[str, Any]]]) -> dict[str, str]:
    """sha256 -> the first shard holding (or having rejected) that track."""
    found: dict[str, str] = {}
    for name, meta in metas:
        for sha in [*meta["tracks"].values(), *(r["sha256"] for r in meta.get("rejected", []) if "sha256" in r)]:
            found.setdefault(sha, name)
    return found


def catalogue(folder: Path) -> dict[str, str]:
    """sha256 -> shard file name, for every track a committed shard of ``folder`` holds (or
    rejected). What is on disk decides: a deleted shard's tracks are simply absent."""
    return _holders(_shard_metas(folder))


def plan_shards(tracks: pd.DataFrame, settings: FeatureSettings, root: Path) -> list[Shard]:
    """Shards for the tracks (by content hash) that no stored shard of this configuration holds.

    Parameters
    ----------
    tracks : the tracks table (track_id, uri, sha256)
    root : the state's ``features/`` folder

    Returns
    -------
    list[Shard] : ``shard_size`` tracks each, in track-id order, each keyed by its content
    """
    folder = feature_dir(root, settings)
    done = catalogue(folder)
    todo = (tracks[~tracks["sha256"].isin(done)].sort_values("track_id")[["track_id", "uri", "sha256"]]
            .reset_index(drop=True))
    shards = []
    for start in range(0, len(todo), settings.shard_size):
        part = todo.iloc[start : start + settings.shard_size].reset_index(drop=True)
        key = stable_hash({"config": settings.config_hash(), "content": part["sha256"].tolist()})
        shards.append(Shard(key, folder / f"shard-{key}.parquet", part))
    return shards


def shard_is_current(shard: Shard) -> bool:
    meta = read_meta(shard.path)
    return meta is not None and meta.get("key") == shard.key


def write_temp_shard(shard: Shard, results: list[Any], settings: FeatureSettings) -> StagedShard:
    """Write a shard's Parquet to a temporary file beside its final path (runs on a Dask worker,
    so the tensors never travel to the flow process). ``results``: per file a TrackFeatures or a
    problem record, or lists of them (batches of the device chain)."""
    results = [r for entry in results for r in (entry if isinstance(entry, list) else [entry])]
    items = [r for r in results if isinstance(r, TrackFeatures)]
    sha_of = dict(zip(shard.tracks["track_id"], shard.tracks["sha256"], strict=True))
    rejected = [{**r, "sha256": sha_of[r["track_id"]]} for r in results if isinstance(r, dict)]
    meta = feature_metadata(settings, shard.key)
    meta["tracks"] = {i.track_id: sha_of[i.track_id] for i in items}
    meta["rejected"] = rejected
    meta["audio_seconds"] = sum(i.seconds for i in items)
    meta["extractor"] = extractor_for(settings).describe()  # same maps either way; kept as provenance
    table = with_meta(features_table(items, settings), meta)
    tmp = temp_path_beside(shard.path)
    _write_shard_table(table, tmp, settings)
    return StagedShard(shard, tmp, segment_checks(table, items, settings), rejected, table.num_rows, meta["audio_seconds"],
                       {i.track_id: i.seconds for i in items})


def _write_shard_table(table: pa.Table, path: Path, settings: FeatureSettings) -> None:
    # Float maps barely compress and this write sits on the critical path: tensors go
    # uncompressed, the small columns zstd; min/max statistics of tensors are costly and unused.
    tensors = {*map_names(settings), "mfcc_stats"}
    compression = {name: ("NONE" if name in tensors else "ZSTD") for name in table.column_names}
    small = [name for name in table.column_names if name not in tensors]
    pq.write_table(table, path, compression=compression, use_dictionary=["track_id", "config_hash"],
                   write_statistics=small, row_group_size=256)


def without_tracks(staged: StagedShard, problems: dict[str, str], reason: str, settings: FeatureSettings) -> StagedShard:
    """The staged shard written again without the tracks of ``problems`` (track id -> detail),
    which join its rejected tracks with ``reason``; the old temporary file is removed.

    Parameters
    ----------
    staged : a shard written by ``write_temp_shard``, not yet committed
    problems : the tracks to take out, each with what it broke
    reason : their quarantine reason (e.g. ``feature_check``)
    """
    table = pq.read_table(staged.tmp_path)
    meta = read_meta(staged.tmp_path) or {}
    uri_of = dict(zip(staged.shard.tracks["track_id"], staged.shard.tracks["uri"], strict=True))
    dropped = [{"track_id": t, "uri": uri_of[t], "reason": reason, "detail": detail, "sha256": meta["tracks"][t]}
               for t, detail in sorted(problems.items())]
    kept = table.filter(pc.invert(pc.is_in(table.column("track_id"), pa.array(sorted(problems)))))
    meta["tracks"] = {t: sha for t, sha in meta["tracks"].items() if t not in problems}
    meta["rejected"] = [*meta.get("rejected", []), *dropped]
    seconds = {t: s for t, s in staged.track_seconds.items() if t not in problems}
    meta["audio_seconds"] = sum(seconds.values())
    tmp = temp_path_beside(staged.shard.path)
    _write_shard_table(with_meta(kept, meta), tmp, settings)
    staged.tmp_path.unlink(missing_ok=True)
    checks = staged.checks[~staged.checks["track_id"].isin(problems)].reset_index(drop=True)
    return StagedShard(staged.shard, tmp, checks, [*staged.rejected, *dropped], kept.num_rows, meta["audio_seconds"], seconds)


def commit_shard(staged: StagedShard) -> Path:
    """Rename a validated shard into place (atomic on one filesystem, durable)."""
    durable_replace(staged.tmp_path, staged.shard.path)
    return staged.shard.path


def discard_shard(staged: StagedShard) -> None:
    staged.tmp_path.unlink(missing_ok=True)


def write_shard(shard: Shard, items: list[TrackFeatures], settings: FeatureSettings,
                rejected: list[dict[str, str]] | None = None) -> Path:
    """Stage and commit in one go (no validation): for tests and notebooks."""
    sha_of = dict(zip(shard.tracks["track_id"], shard.tracks["sha256"], strict=True))
    problems = [{k: v for k, v in r.items() if k != "sha256"} for r in rejected or [] if r["track_id"] in sha_of]
    return commit_shard(write_temp_shard(shard, [*items, *problems], settings))


def write_index(tracks: pd.DataFrame, settings: FeatureSettings, root: Path) -> dict[str, Any]:
    """index.json: the shards holding the current tracks, and which shard serves each track.

    A track held by two shards (a retried shard racing its first attempt) is served once."""
    folder = feature_dir(root, settings)
    metas = _shard_metas(folder)  # one metadata read per shard
    held = _holders(metas)
    wanted = set(tracks["sha256"])
    rejected: list[dict[str, str]] = []
    serving: dict[str, str] = {}
    shards: set[str] = set()
    for name, meta in metas:
        for track_id, sha in meta["tracks"].items():
            if sha in wanted and held.get(sha) == name:
                serving[track_id] = name
                shards.add(name)
        rejected += [r for r in meta.get("rejected", []) if r.get("sha256") in wanted and held.get(r["sha256"]) == name]
    index = {
        "config_hash": settings.config_hash(),
        "shards": sorted(shards),
        "tracks": dict(sorted(serving.items())),
        "key": stable_hash({"config": settings.config_hash(), "tracks": sorted(serving), "shards": sorted(shards)}),
    }
    write_json_atomic(folder / "index.json", index)
    return {**index, "rejected": rejected, "path": str(folder / "index.json")}


def features_key(root: Path, settings: FeatureSettings) -> str:
    """Identifies the stored features (config + content of every shard) for downstream keys."""
    index = feature_dir(root, settings) / "index.json"
    return json.loads(index.read_text())["key"]


@dataclass
class FeatureSet:
    logmel: np.ndarray  # (N, n_mels, frames) float32
    segments: pd.DataFrame  # track_id, segment, start_s
    config_hash: str
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # every stored map, logmel included
    mfcc_stats: np.ndarray | None = None  # (N, 6 * n_mfcc)

    def stacked(self, names: tuple[str, ...] = MAPS) -> np.ndarray:
        """(N, channels, n_mels, frames): the maps as CNN input channels."""
        return np.stack([self.maps[n] for n in names], axis=1)


def load_features(root: Path, settings: FeatureSettings, track_ids: list[str] | None = None,
                  maps: tuple[str, ...] | None = None) -> FeatureSet:
    """Every stored segment (optionally only ``track_ids``) of one feature configuration, each
    track from the one shard the index names for it.

    Parameters
    ----------
    root : the state's ``features/`` folder
    track_ids : the tracks to load; None: every indexed track
    maps : the maps to load; None: every stored map

    Returns
    -------
    FeatureSet : ``maps[name]`` (N, n_mels, segment_frames) float32 per map, ``mfcc_stats``
        (N, 6 * n_mfcc), ``segments`` (track_id, segment, start_s), N segments in shard order
    """
    folder = feature_dir(root, settings)
    index = json.loads((folder / "index.json").read_text())
    serving: dict[str, str] = index["tracks"]
    wanted = set(serving) if track_ids is None else set(track_ids) & set(serving)
    names = tuple(maps) if maps is not None else map_names(settings)
    h, w = settings.n_mels, settings.segment_frames
    arrays: dict[str, list[np.ndarray]] = {n: [] for n in names}
    stats, frames = [], []
    for name in index["shards"]:
        mine = [t for t, s in serving.items() if s == name and t in wanted]
        if not mine:
            continue
        table = pq.read_table(folder / name, columns=["track_id", "segment", "start_s", *names, "mfcc_stats"])
        table = table.filter(pc.is_in(table.column("track_id"), pa.array(mine)))
        for n in names:
            arrays[n].append(tensor_rows(table.column(n)).reshape(-1, h, w))
        stats.append(tensor_rows(table.column("mfcc_stats")))
        frames.append(table.select(["track_id", "segment", "start_s"]).to_pandas())
    loaded = {n: (np.concatenate(a) if a else np.zeros((0, h, w), np.float32)) for n, a in arrays.items()}
    segments = (pd.concat(frames, ignore_index=True) if frames
                else pd.DataFrame(columns=["track_id", "segment", "start_s"]))
    mfcc = np.concatenate(stats) if stats else np.zeros((0, 6 * settings.n_mfcc), np.float32)
    return FeatureSet(loaded.get("logmel", np.zeros((0, h, w), np.float32)), segments, index["config_hash"], loaded, mfcc)
