"""Log-mel segments: one stored shape, fixed dB reference, the short-track rule, Parquet metadata."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from chorus.audio import AudioProblem
from chorus.config import FeatureSettings
from chorus.features import extract_track, load_features, plan_shards, segment, write_index, write_shard, logmel
from chorus.io import read_meta
from conftest import SR, tone, write_wav


def test_segments_have_one_fixed_shape(tmp_path):
    settings = FeatureSettings()
    path = write_wav(tmp_path / "a.wav", tone(9.0))
    feats = extract_track("t", str(path), settings)
    frames = 1 + int(9.0 * SR) // settings.hop_length
    assert feats.logmel.shape == (1 + (frames - 128) // 128, 128, 128)
    assert feats.logmel.dtype == np.float32
    assert np.allclose(feats.starts_s[:2], [0.0, 128 * 512 / SR])


def test_db_reference_is_fixed_so_loudness_survives():
    settings = FeatureSettings()
    loud, quiet = logmel(tone(3.0, amp=0.5), settings), logmel(tone(3.0, amp=0.05), settings)
    # 10x amplitude = +20 dB everywhere above the floor; a per-segment max reference would erase it.
    assert loud.max() - quiet.max() == pytest.approx(20.0, abs=0.1)
    assert loud.min() >= settings.db_floor


def test_short_track_is_padded_or_rejected_by_rule():
    spec = np.zeros((128, 40), np.float32)
    segs, starts, padded = segment(spec, FeatureSettings(short_track="pad"))
    assert segs.shape == (1, 128, 128) and padded
    assert (segs[0, :, 40:] == FeatureSettings().db_floor).all()
    with pytest.raises(AudioProblem, match="too_short_for_segment"):
        segment(spec, FeatureSettings(short_track="reject"))


def test_shards_roundtrip_with_metadata(tmp_path):
    settings = FeatureSettings(n_mels=64, shard_size=2)
    rows = []
    for i in range(3):
        path = write_wav(tmp_path / f"{i}.wav", tone(4.0, 300 + 100 * i))
        rows.append({"track_id": f"{i:016x}", "uri": str(path), "sha256": f"{i:064x}"})
    tracks = pd.DataFrame(rows)
    shards = plan_shards(tracks, settings, tmp_path / "features")
    assert [len(s.tracks) for s in shards] == [2, 1]
    for shard in shards:
        items = [extract_track(t, u, settings) for t, u in zip(shard.tracks.track_id, shard.tracks.uri, strict=True)]
        write_shard(shard, items, settings, rejected=[])
    write_index(shards, settings, tmp_path / "features")
    meta = read_meta(shards[0].path)
    assert meta["config_hash"] == settings.config_hash()
    assert meta["shape"] == {"logmel": [64, 128]}
    assert meta["db_reference"] == 1.0 and "librosa" in meta["libraries"]
    assert pq.read_schema(shards[0].path).field("logmel").type.list_size == 64 * 128
    loaded = load_features(tmp_path / "features", settings)
    assert loaded.logmel.shape[1:] == (64, 128)
    assert sorted(loaded.segments.track_id.unique()) == sorted(tracks.track_id)
    only = load_features(tmp_path / "features", settings, [rows[2]["track_id"]])
    assert set(only.segments.track_id) == {rows[2]["track_id"]}


def test_changed_setting_writes_to_a_new_folder(tmp_path):
    a, b = FeatureSettings(), FeatureSettings(n_mels=96)
    tracks = pd.DataFrame({"track_id": ["0" * 16], "uri": ["x"], "sha256": ["0" * 64]})
    assert plan_shards(tracks, a, tmp_path)[0].path.parent != plan_shards(tracks, b, tmp_path)[0].path.parent
