"""Small synthetic feature sets with a planted class signal, for model tests that must run in
seconds (the pipeline tests train on real decoded audio)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from chorus.config import FeatureSettings, TrainSettings
from chorus.features import FeatureSet

MAPS = ("logmel", "harmonic", "percussive")


def feature_settings() -> FeatureSettings:
    return FeatureSettings(n_mels=32, segment_frames=32, segment_hop_frames=32, n_mfcc=8)


def train_settings(**update: object) -> TrainSettings:
    values = {"epochs": 6, "batch_size": 16, "channels": (8, 16), "learning_rate": 5e-3, "patience": 10,
              "threads": 1, "precision": "fp32", "dropout": 0.1}
    values.update(update)
    return TrainSettings(**values)


def synthetic(n_tracks: int = 48, segments: int = 3, n_classes: int = 3, seed: int = 0) -> tuple[FeatureSet, pd.DataFrame]:
    """Tracks of ``n_classes`` styles; each style raises a band of the (32 x 32) maps by 12 dB
    over a -60 dB noise floor. Splits 60/20/20, stratified."""
    rng = np.random.default_rng(seed)
    styles = [f"s{i % n_classes}" for i in range(n_tracks)]
    tracks = pd.DataFrame({"track_id": [f"t{i:03d}" for i in range(n_tracks)], "style": styles})
    tracks["split"] = [("train", "train", "train", "valid", "test")[(i // n_classes) % 5] for i in range(n_tracks)]
    tracks["mood"] = [("joy", "sadness", "quiet")[i % 3] for i in range(n_tracks)]
    rows, maps = [], {m: [] for m in MAPS}
    for track, style in zip(tracks["track_id"], styles, strict=True):
        k = int(style[1:])
        for s in range(segments):
            rows.append({"track_id": track, "segment": s, "start_s": s * 0.74})
            for name in MAPS:
                x = rng.normal(-60, 3, (32, 32)).astype(np.float32)
                x[k * 8 : k * 8 + 8] += 12.0
                maps[name].append(x)
    stacked = {m: np.stack(v) for m, v in maps.items()}
    return FeatureSet(stacked["logmel"], pd.DataFrame(rows), "synthetic-hash", stacked), tracks
