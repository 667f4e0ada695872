"""Audio features: the DSP chain (``dsp``), the device chain (``torch_chain``), which of them
extracts (``backend``), and shard storage, the index and loading (``store``)."""

from chorus.features.backend import (
    extract_batch_or_problems,
    extract_track,
    extract_track_or_problem,
    extractor_for,
    uses_device_batches,
    warm_extractor,
)
from chorus.features.dsp import (
    AMIN,
    DB_MAX,
    DB_REFERENCE,
    FEATURE_SCHEMA_VERSION,
    MAPS,
    MFCC_STATS,
    FeatureExtractor,
    TrackFeatures,
    map_names,
    mel_filterbank,
    problem_record,
    segment,
    segment_seconds,
)
from chorus.features.store import (
    FeatureSet,
    Shard,
    StagedShard,
    catalogue,
    commit_shard,
    discard_shard,
    feature_dir,
    features_key,
    fixed_size_column,
    load_features,
    plan_shards,
    segment_check_params,
    shard_is_current,
    tensor_rows,
    without_tracks,
    write_index,
    write_shard,
    write_temp_shard,
)

__all__ = [
    "AMIN", "DB_MAX", "DB_REFERENCE", "FEATURE_SCHEMA_VERSION", "MAPS", "MFCC_STATS", "FeatureExtractor", "FeatureSet",
    "Shard", "StagedShard", "TrackFeatures", "catalogue", "commit_shard", "discard_shard", "extract_batch_or_problems",
    "extract_track", "extract_track_or_problem", "extractor_for", "feature_dir", "features_key", "fixed_size_column",
    "load_features", "map_names", "mel_filterbank", "plan_shards", "problem_record", "segment", "segment_check_params",
    "segment_seconds", "shard_is_current", "tensor_rows", "uses_device_batches", "warm_extractor", "write_index", "write_shard",
    "without_tracks", "write_temp_shard",
]
