"""Features: log-mel per fixed-length segment, stored as fixed-shape float32 in Parquet.

dB use a fixed reference (1.0) and a floor, never the per-segment maximum, so loudness survives
as a cue. One stored shape per feature set (n_mels x segment_frames); models crop or pool it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from chorus.audio import AudioProblem, load_mono
from chorus.config import FeatureSettings, stable_hash
from chorus.io import read_meta, write_json_atomic, write_parquet

FEATURE_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class TrackFeatures:
    track_id: str
    logmel: np.ndarray  # (segments, n_mels, segment_frames) float32
    starts_s: np.ndarray  # (segments,)
    padded: bool


def mel_filterbank(settings: FeatureSettings) -> np.ndarray:
    import librosa

    return librosa.filters.mel(
        sr=settings.sample_rate, n_fft=settings.n_fft, n_mels=settings.n_mels,
        fmin=settings.fmin, fmax=settings.fmax,
    ).astype(np.float32)


def logmel(y: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """(n_mels, frames) log-power mel in dB re 1.0, floored at ``db_floor``."""
    import librosa

    stft = librosa.stft(y, n_fft=settings.n_fft, hop_length=settings.hop_length)
    power = np.abs(stft) ** 2
    mel = mel_filterbank(settings) @ power
    db = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
    return np.maximum(db, settings.db_floor).astype(np.float32)


def segment(spec: np.ndarray, settings: FeatureSettings) -> tuple[np.ndarray, np.ndarray, bool]:
    """Cut (n_mels, frames) into (segments, n_mels, segment_frames); pad or reject short input."""
    width, hop = settings.segment_frames, settings.segment_hop_frames
    frames = spec.shape[1]
    padded = False
    if frames < width:
        if settings.short_track == "reject":
            seconds = frames * settings.hop_length / settings.sample_rate
            raise AudioProblem("too_short_for_segment", f"{seconds:.2f} s < one segment (features.short_track=reject)")
        spec = np.pad(spec, ((0, 0), (0, width - frames)), constant_values=settings.db_floor)
        padded = True
        frames = width
    count = 1 + (frames - width) // hop
    starts = np.arange(count) * hop
    segments = np.stack([spec[:, s : s + width] for s in starts])
    return segments, starts * settings.hop_length / settings.sample_rate, padded


def extract_track(track_id: str, uri: str, settings: FeatureSettings) -> TrackFeatures:
    """Decode -> mono -> resample -> log-mel -> segments, for one track."""
    y = load_mono(uri, settings.sample_rate)
    segments, starts, padded = segment(logmel(y, settings), settings)
    return TrackFeatures(track_id, segments, starts.astype(np.float32), padded)


def extract_track_or_problem(track_id: str, uri: str, settings: FeatureSettings) -> TrackFeatures | dict[str, str]:
    """For Dask workers: a problem comes back as a record instead of killing the shard."""
    try:
        return extract_track(track_id, uri, settings)
    except AudioProblem as problem:
        return {"track_id": track_id, "uri": uri, "reason": problem.reason, "detail": problem.detail}


def features_table(items: list[TrackFeatures], settings: FeatureSettings) -> pa.Table:
    h, w = settings.n_mels, settings.segment_frames
    config_hash = settings.config_hash()
    ids, segs, starts, padded, blocks = [], [], [], [], []
    for item in items:
        n = item.logmel.shape[0]
        ids += [item.track_id] * n
        segs += list(range(n))
        starts += item.starts_s.tolist()
        padded += [item.padded] * n
        blocks.append(item.logmel.reshape(n, h * w))
    flat = np.concatenate(blocks).reshape(-1) if blocks else np.zeros(0, np.float32)
    values = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), h * w)
    return pa.table(
        {
            "track_id": pa.array(ids, pa.string()),
            "segment": pa.array(segs, pa.int32()),
            "start_s": pa.array(starts, pa.float32()),
            "padded": pa.array(padded, pa.bool_()),
            "config_hash": pa.array([config_hash] * len(ids), pa.string()),
            "logmel": values,
        }
    )


def feature_metadata(settings: FeatureSettings, key: str) -> dict[str, Any]:
    import librosa

    return {
        "key": key,
        "feature_schema_version": FEATURE_SCHEMA_VERSION,
        "config_hash": settings.config_hash(),
        "config": settings.model_dump(mode="json", exclude=set(settings._runtime_fields)),
        "shape": {"logmel": [settings.n_mels, settings.segment_frames]},
        "db_reference": 1.0,
        "libraries": {"librosa": librosa.__version__, "numpy": np.__version__, "pyarrow": pa.__version__},
    }


def feature_dir(root: Path, settings: FeatureSettings) -> Path:
    """Each feature configuration has its own folder, so configurations never overwrite each other."""
    return root / settings.config_hash()


@dataclass(frozen=True)
class Shard:
    key: str
    path: Path
    tracks: pd.DataFrame  # track_id, uri, sha256


def plan_shards(tracks: pd.DataFrame, settings: FeatureSettings, root: Path) -> list[Shard]:
    """Group tracks (sorted by id) into shards whose key covers the config and the content."""
    ordered = tracks.sort_values("track_id")[["track_id", "uri", "sha256"]].reset_index(drop=True)
    folder = feature_dir(root, settings)
    shards = []
    for start in range(0, len(ordered), settings.shard_size):
        part = ordered.iloc[start : start + settings.shard_size].reset_index(drop=True)
        key = stable_hash({"config": settings.config_hash(), "content": part["sha256"].tolist()})
        shards.append(Shard(key, folder / f"shard-{key}.parquet", part))
    return shards


def shard_is_current(shard: Shard) -> bool:
    meta = read_meta(shard.path)
    return meta is not None and meta.get("key") == shard.key


def write_shard(shard: Shard, items: list[TrackFeatures], settings: FeatureSettings,
                rejected: list[dict[str, str]]) -> Path:
    table = features_table(items, settings)
    meta = feature_metadata(settings, shard.key)
    meta["rejected"] = rejected
    return write_parquet(table, shard.path, meta, row_group_size=256)


def write_index(shards: list[Shard], settings: FeatureSettings, root: Path) -> Path:
    """index.json lists the shards of the current track set; shards of an older set are removed."""
    folder = feature_dir(root, settings)
    current = {s.path.name for s in shards}
    for stale in folder.glob("shard-*.parquet"):
        if stale.name not in current:
            stale.unlink()
    return write_json_atomic(
        folder / "index.json",
        {"config_hash": settings.config_hash(), "shards": sorted(current),
         "key": stable_hash(sorted(s.key for s in shards))},
    )


def features_key(root: Path, settings: FeatureSettings) -> str:
    """Identifies the stored features (config + content of every shard) for downstream keys."""
    index = feature_dir(root, settings) / "index.json"
    return json.loads(index.read_text())["key"]


@dataclass
class FeatureSet:
    logmel: np.ndarray  # (N, n_mels, frames) float32
    segments: pd.DataFrame  # track_id, segment, start_s
    config_hash: str


def load_features(root: Path, settings: FeatureSettings, track_ids: list[str] | None = None) -> FeatureSet:
    """Every stored segment (optionally only ``track_ids``) of one feature configuration."""
    folder = feature_dir(root, settings)
    index = json.loads((folder / "index.json").read_text())
    wanted = set(track_ids) if track_ids is not None else None
    arrays, frames = [], []
    h, w = settings.n_mels, settings.segment_frames
    for name in index["shards"]:
        table = pq.read_table(folder / name)
        if wanted is not None:
            mask = pa.array([t in wanted for t in table.column("track_id").to_pylist()])
            table = table.filter(mask)
        if table.num_rows == 0:
            continue
        flat = table.column("logmel").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        arrays.append(flat.reshape(-1, h, w))
        frames.append(table.select(["track_id", "segment", "start_s"]).to_pandas())
    logmel_arr = np.concatenate(arrays) if arrays else np.zeros((0, h, w), np.float32)
    segments = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["track_id", "segment", "start_s"])
    return FeatureSet(logmel_arr.astype(np.float32, copy=False), segments, index["config_hash"])

