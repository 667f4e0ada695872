"""Features: one STFT per track -> log-mel, harmonic and percussive log-mel (HPSS) and MFCC
statistics, cut into fixed-length segments and stored as fixed-shape float32 in Parquet.

dB use a fixed reference (1.0) and a floor, never the per-segment maximum, so loudness survives
as a cue. One stored shape per feature set (n_mels x segment_frames); models crop or pool it.

HPSS is librosa's definition (median filters across time and frequency, soft masks) but the
median filters are bottleneck's moving median over the same symmetric-padded windows: identical
output (scipy's ``mode="reflect"`` is numpy's ``"symmetric"``), about ten times faster. HPSS is
90% of the obvious per-clip chain, so this is where the speed is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from chorus.audio import AudioProblem, load_mono
from chorus.config import FeatureSettings, stable_hash
from chorus.io import read_meta, temp_path_beside, with_meta, write_json_atomic

FEATURE_SCHEMA_VERSION = 2
DB_REFERENCE = 1.0
AMIN = 1e-10  # power floor before dB: -100 dB
DB_MAX = 160.0  # far above any real mel power (a full-scale sine is ~+60 dB); a guard against garbage
MAPS = ("logmel", "harmonic", "percussive")
MFCC_STATS = ("mfcc_mean", "mfcc_std", "delta_mean", "delta_std", "delta2_mean", "delta2_std")


def map_names(settings: FeatureSettings) -> tuple[str, ...]:
    return MAPS if settings.hpss else MAPS[:1]


@dataclass(frozen=True)
class TrackFeatures:
    track_id: str
    maps: dict[str, np.ndarray]  # name -> (segments, n_mels, segment_frames) float32
    mfcc_stats: np.ndarray  # (segments, 6 * n_mfcc) float32, in MFCC_STATS order
    starts_s: np.ndarray  # (segments,)
    padded: bool
    seconds: float  # audio duration analysed
    # per segment: all values finite (1/0), lowest and highest dB over the maps; computed where
    # the track is extracted, while its maps are in cache, for the shard's expectation suite
    checks: np.ndarray  # (segments, 3) float64

    @property
    def logmel(self) -> np.ndarray:
        return self.maps["logmel"]

    @property
    def segments(self) -> int:
        return int(self.logmel.shape[0])


def centered_moving_median(x: np.ndarray, window: int, axis: int) -> np.ndarray:
    """scipy.ndimage.median_filter(x, size=window along ``axis``, mode="reflect"), fast."""
    import bottleneck

    half = window // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (half, half)
    moved = bottleneck.move_median(np.pad(x, pad, mode="symmetric"), window, axis=axis)
    keep = [slice(None)] * x.ndim
    keep[axis] = slice(window - 1, window - 1 + x.shape[axis])
    return moved[tuple(keep)]


class FeatureExtractor:
    """The per-track chain for one feature configuration; filterbanks are built once."""

    def __init__(self, settings: FeatureSettings) -> None:
        import scipy.sparse

        self.settings = settings
        # Mel filters are mostly zeros: a sparse product is several times cheaper than dense.
        self.mel = scipy.sparse.csr_matrix(mel_filterbank(settings))

    def stft_magnitude(self, y: np.ndarray) -> np.ndarray:
        """|STFT| with librosa.stft itself: another FFT (scipy's float32 rfft) was ~1.7x faster
        but its different rounding moved near-silent mel bands of the percussive map by up to
        0.04 dB against the reference chain; the STFT is ~10% of the chain."""
        import librosa

        s = self.settings
        return np.abs(librosa.stft(y, n_fft=s.n_fft, hop_length=s.hop_length))

    def to_db(self, power: np.ndarray) -> np.ndarray:
        import librosa

        db = librosa.power_to_db(self.mel @ power, ref=DB_REFERENCE, amin=AMIN, top_db=None)
        return np.maximum(db, self.settings.db_floor).astype(np.float32, copy=False)

    def analyse(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """Full-length (n_mels, frames) maps of a mono signal at the analysis rate."""
        s = self.settings
        magnitude = self.stft_magnitude(y)
        maps = {"logmel": self.to_db(magnitude**2)}
        if s.hpss:
            harm = centered_moving_median(magnitude, s.hpss_kernel, axis=1)  # across time
            perc = centered_moving_median(magnitude, s.hpss_kernel, axis=0)  # across frequency
            maps["harmonic"], maps["percussive"] = (self.to_db(p) for p in hpss_powers(magnitude, harm, perc))
        return maps

    def mfcc_statistics(self, logmel: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """MFCC (DCT-II of the log-mel, as librosa.feature.mfcc) + deltas; mean/std per segment."""
        import librosa

        s = self.settings
        mfcc = librosa.feature.mfcc(S=logmel, n_mfcc=s.n_mfcc)
        d1 = librosa.feature.delta(mfcc, order=1)
        d2 = librosa.feature.delta(mfcc, order=2)
        rows = []
        for start in starts:
            window = slice(int(start), int(start) + s.segment_frames)
            parts = [(m[:, window].mean(axis=1), m[:, window].std(axis=1)) for m in (mfcc, d1, d2)]
            rows.append(np.concatenate([p for pair in parts for p in pair]))
        return np.asarray(rows, np.float32).reshape(len(starts), 6 * s.n_mfcc)

    def describe(self) -> dict[str, str]:
        """Which chain made the maps, for a shard's metadata."""
        return {"backend": "numpy"}

    def analyse_batch(self, ys: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """``analyse`` of several signals (a device extractor does them in one call)."""
        return [self.analyse(y) for y in ys]

    def from_signal(self, track_id: str, y: np.ndarray) -> TrackFeatures:
        return self.from_maps(track_id, self.analyse(y), len(y))

    def from_maps(self, track_id: str, maps: dict[str, np.ndarray], samples: int) -> TrackFeatures:
        """Segments and MFCC statistics of a track's full-length maps."""
        s = self.settings
        frames = maps["logmel"].shape[1]
        padded = frames < s.segment_frames
        if padded:
            if s.short_track == "reject":
                seconds = samples / s.sample_rate
                raise AudioProblem("too_short_for_segment",
                                   f"{seconds:.2f} s < one segment of {segment_seconds(s):.2f} s (features.short_track=reject)")
            maps = {k: pad_frames(v, s.segment_frames, s.db_floor) for k, v in maps.items()}
        starts = segment_starts(maps["logmel"].shape[1], s)
        segments = {k: cut(v, starts, s.segment_frames) for k, v in maps.items()}
        mfcc_stats = self.mfcc_statistics(maps["logmel"], starts)
        return TrackFeatures(
            track_id,
            segments,
            mfcc_stats,
            (starts * s.hop_length / s.sample_rate).astype(np.float32),
            padded,
            samples / s.sample_rate,
            segment_summary(segments, mfcc_stats),
        )

    def decode(self, uri: str) -> np.ndarray:
        """Decode -> mono -> resample (soxr) to the analysis rate; non-finite samples are a problem."""
        y = load_mono(uri, self.settings.sample_rate)
        if not np.isfinite(y).all():
            raise AudioProblem("non_finite_samples", f"{int((~np.isfinite(y)).sum())} NaN/inf samples after decoding")
        return y

    def extract(self, track_id: str, uri: str) -> TrackFeatures:
        """Decode -> one STFT -> maps -> segments, for one file."""
        return self.from_signal(track_id, self.decode(uri))

    def extract_batch(self, track_ids: list[str], uris: list[str]) -> list[TrackFeatures | dict[str, str]]:
        """Several files, their maps in one ``analyse_batch`` call; a file that fails comes back as
        a problem record (as ``extract_track_or_problem``) and the others go on."""
        results: list[TrackFeatures | dict[str, str] | None] = []
        signals: dict[int, np.ndarray] = {}
        for n, (track_id, uri) in enumerate(zip(track_ids, uris, strict=True)):
            try:
                signals[n] = self.decode(uri)
                results.append(None)
            except AudioProblem as problem:
                results.append(problem_record(track_id, uri, problem))
        for n, maps in zip(signals, self.analyse_batch(list(signals.values())), strict=True):
            try:
                results[n] = self.from_maps(track_ids[n], maps, len(signals[n]))
            except AudioProblem as problem:
                results[n] = problem_record(track_ids[n], uris[n], problem)
        return [r for r in results if r is not None]


def segment_summary(maps: dict[str, np.ndarray], mfcc_stats: np.ndarray) -> np.ndarray:
    """(segments, 3): finite (1/0), min dB and max dB over every map of each segment."""
    finite = np.isfinite(mfcc_stats).all(axis=1)
    low = np.full(len(mfcc_stats), np.inf)
    high = np.full(len(mfcc_stats), -np.inf)
    for block in maps.values():
        rows = block.reshape(len(block), -1)
        finite &= np.isfinite(rows).all(axis=1)
        low = np.minimum(low, rows.min(axis=1, initial=np.inf))
        high = np.maximum(high, rows.max(axis=1, initial=-np.inf))
    return np.column_stack([finite, low, high]).astype(np.float64)


def hpss_powers(magnitude: np.ndarray, harm: np.ndarray, perc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Harmonic and percussive power spectra from librosa's soft masks (power 2, margin 1):
    mask_h = h^2 / (h^2 + p^2), zeros split evenly, computed in place in one pass instead of two
    softmask calls. (librosa first divides by max(h, p) against overflow; audio magnitudes are
    nowhere near it.) ``harm`` and ``perc`` are overwritten."""
    np.multiply(harm, harm, out=harm)
    np.multiply(perc, perc, out=perc)
    total = harm + perc
    empty = total <= np.finfo(np.float32).tiny
    total[empty], harm[empty], perc[empty] = 1.0, 0.5, 0.5
    # each mask from its own part: 1 - mask_h would cancel catastrophically where one part dominates
    np.divide(harm, total, out=harm)
    np.divide(perc, total, out=perc)
    power = magnitude * magnitude
    np.multiply(harm, harm, out=harm)
    np.multiply(harm, power, out=harm)
    np.multiply(perc, perc, out=perc)
    np.multiply(perc, power, out=perc)
    return harm, perc


def mel_filterbank(settings: FeatureSettings) -> np.ndarray:
    import librosa

    return librosa.filters.mel(
        sr=settings.sample_rate, n_fft=settings.n_fft, n_mels=settings.n_mels,
        fmin=settings.fmin, fmax=settings.fmax,
    ).astype(np.float32)


def segment_seconds(settings: FeatureSettings) -> float:
    return settings.segment_frames * settings.hop_length / settings.sample_rate


def logmel(y: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """(n_mels, frames) log-power mel in dB re 1.0, floored at ``db_floor``."""
    extractor = FeatureExtractor(settings)
    return extractor.to_db(extractor.stft_magnitude(y) ** 2)


def pad_frames(spec: np.ndarray, width: int, floor: float) -> np.ndarray:
    return np.pad(spec, ((0, 0), (0, width - spec.shape[1])), constant_values=floor)


def segment_starts(frames: int, settings: FeatureSettings) -> np.ndarray:
    """First frame of each whole segment (segment_frames wide, segment_hop_frames apart)."""
    return np.arange(1 + (frames - settings.segment_frames) // settings.segment_hop_frames) * settings.segment_hop_frames


def cut(spec: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    return np.stack([spec[:, s : s + width] for s in starts]).astype(np.float32, copy=False)


def segment(spec: np.ndarray, settings: FeatureSettings) -> tuple[np.ndarray, np.ndarray, bool]:
    """Cut (n_mels, frames) into (segments, n_mels, segment_frames); pad or reject short input."""
    padded = spec.shape[1] < settings.segment_frames
    if padded:
        if settings.short_track == "reject":
            seconds = spec.shape[1] * settings.hop_length / settings.sample_rate
            raise AudioProblem("too_short_for_segment", f"{seconds:.2f} s < one segment (features.short_track=reject)")
        spec = pad_frames(spec, settings.segment_frames, settings.db_floor)
    starts = segment_starts(spec.shape[1], settings)
    return cut(spec, starts, settings.segment_frames), starts * settings.hop_length / settings.sample_rate, padded


_EXTRACTORS: dict[tuple[str, str, str], FeatureExtractor] = {}


def extractor_for(settings: FeatureSettings) -> FeatureExtractor:
    """One extractor (filterbank, windows, device tensors) per process and configuration. The numpy
    chain by default; ``features.backend`` torch (or auto, with CUDA) the batched device chain."""
    kind = "numpy"
    if settings.backend != "numpy":
        from chorus.features_torch import extractor_kind

        kind = extractor_kind(settings)
    key = (settings.config_hash(), kind, settings.torch_device)
    if key not in _EXTRACTORS:
        if kind == "torch":
            from chorus.features_torch import TorchFeatureExtractor

            _EXTRACTORS[key] = TorchFeatureExtractor(settings, settings.torch_device)
        else:
            _EXTRACTORS[key] = FeatureExtractor(settings)
    return _EXTRACTORS[key]


def uses_device_batches(settings: FeatureSettings) -> bool:
    """Whether files go to the workers ``device_batch`` at a time (decided without touching a device:
    with ``auto`` it is each worker that picks torch or numpy, and numpy takes a batch file by file)."""
    return settings.backend != "numpy"


def extract_track(track_id: str, uri: str, settings: FeatureSettings) -> TrackFeatures:
    return extractor_for(settings).extract(track_id, uri)


def problem_record(track_id: str, uri: str, problem: AudioProblem) -> dict[str, str]:
    return {"track_id": track_id, "uri": uri, "reason": problem.reason, "detail": problem.detail}


def extract_track_or_problem(track_id: str, uri: str, settings: FeatureSettings) -> TrackFeatures | dict[str, str]:
    """For Dask workers: a problem comes back as a record instead of killing the shard."""
    try:
        return extract_track(track_id, uri, settings)
    except AudioProblem as problem:
        return problem_record(track_id, uri, problem)


def extract_batch_or_problems(track_ids: list[str], uris: list[str],
                              settings: FeatureSettings) -> list[TrackFeatures | dict[str, str]]:
    """For Dask workers on the device chain: a batch of files, problems as records."""
    return extractor_for(settings).extract_batch(track_ids, uris)


# --- storage -------------------------------------------------------------------------------


def fixed_size_column(blocks: list[np.ndarray], size: int) -> pa.ChunkedArray:
    """Row blocks (each (rows, ...) float32) as one fixed_size_list<float32>[size] column, a chunk
    per block over the blocks' own memory (no concatenated copy of a shard's tensors)."""
    chunks = []
    for block in blocks:
        rows = np.ascontiguousarray(block, np.float32).reshape(len(block), -1)
        if rows.shape[1] != size:
            raise ValueError(f"a block of shape {block.shape} does not have {size} values per row")
        chunks.append(pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1), pa.float32()), size))
    return pa.chunked_array(chunks, pa.list_(pa.float32(), size))


def tensor_rows(column: pa.ChunkedArray) -> np.ndarray:
    """A fixed_size_list column as a (rows, list_size) numpy array."""
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
    import bottleneck
    import librosa
    import scipy

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
        "libraries": {"librosa": librosa.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
                      "bottleneck": bottleneck.__version__, "pyarrow": pa.__version__},
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
    """Shards for the tracks (by content hash) that no stored shard of this configuration holds."""
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


def stage_shard(shard: Shard, results: list[Any], settings: FeatureSettings) -> StagedShard:
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
    # Float maps barely compress (zstd saves ~15%) and this write sits on the critical path:
    # tensors go uncompressed, the small columns zstd.
    tensors = {*map_names(settings), "mfcc_stats"}
    compression = {name: ("NONE" if name in tensors else "ZSTD") for name in table.column_names}
    small = [name for name in table.column_names if name not in tensors]
    pq.write_table(table, tmp, compression=compression, use_dictionary=["track_id", "config_hash"],
                   write_statistics=small, row_group_size=256)  # min/max of tensors: costly, unused
    return StagedShard(shard, tmp, segment_checks(table, items, settings), rejected, table.num_rows, meta["audio_seconds"])


def commit_shard(staged: StagedShard) -> Path:
    """Rename a validated shard into place (atomic on one filesystem)."""
    import os

    os.replace(staged.tmp_path, staged.shard.path)
    return staged.shard.path


def discard_shard(staged: StagedShard) -> None:
    staged.tmp_path.unlink(missing_ok=True)


def write_shard(shard: Shard, items: list[TrackFeatures], settings: FeatureSettings,
                rejected: list[dict[str, str]] | None = None) -> Path:
    """Stage and commit in one go (no validation): for tests and notebooks."""
    sha_of = dict(zip(shard.tracks["track_id"], shard.tracks["sha256"], strict=True))
    problems = [{k: v for k, v in r.items() if k != "sha256"} for r in rejected or [] if r["track_id"] in sha_of]
    return commit_shard(stage_shard(shard, [*items, *problems], settings))


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
    track from the one shard the index names for it."""
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
