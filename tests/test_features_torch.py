"""The torch backend (for CUDA workers) computes the same maps as the numpy chain, a batch of
tracks of different lengths at once, and writes the same shards through Dask. Here it runs on the
CPU: the arithmetic is the same on a GPU, and the benchmark compares it there when one is present."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from chorus.config import ChorusSettings, FeatureSettings
from chorus.features import FeatureExtractor, extractor_for, load_features, plan_shards, write_index
from chorus.features.torch_chain import TorchFeatureExtractor, symmetric_index
from chorus.io import read_meta
from conftest import write_wav
from test_features import music_like


@pytest.mark.parametrize("length,pad", [(10, 3), (5, 15), (1, 4), (40, 15)])
def test_symmetric_index_is_numpys_symmetric_pad(length, pad):
    x = np.arange(length)
    assert np.array_equal(x[symmetric_index(length, pad, torch.device("cpu")).numpy()],
                          np.pad(x, pad, mode="symmetric"))


def test_torch_maps_equal_the_numpy_chain_for_a_batch_of_lengths():
    settings = FeatureSettings()
    # whole clips, one shorter than the median window's half width (10 frames), one mid-length
    signals = [music_like(4.0, seed=1), music_like(4.0, seed=2)[: 512 * 10], music_like(2.5, seed=3)]
    expected = [FeatureExtractor(settings).analyse(y) for y in signals]
    got = TorchFeatureExtractor(settings, "cpu").analyse_batch(signals)
    for want, have in zip(expected, got, strict=True):
        for name in ("logmel", "harmonic", "percussive"):
            assert have[name].dtype == np.float32 and have[name].shape == want[name].shape
            # float32 rounding of a different summation order: ~1e-5 dB; a track that saw its
            # neighbours' frames in the batch would be off by dB at its edges
            assert np.abs(have[name] - want[name]).max() <= 1e-3, name


def test_torch_backend_writes_the_same_shard_through_dask(tmp_path):
    from distributed import Client

    from chorus import stages
    from chorus.validation import Validator

    rows = []
    for i, seconds in enumerate((3.0, 5.0, 2.0)):
        path = write_wav(tmp_path / f"{i}.wav", music_like(seconds, seed=i), subtype="FLOAT")
        rows.append({"track_id": f"{i:016x}", "uri": str(path), "sha256": f"{i:064x}"})
    (tmp_path / "broken.wav").write_bytes(b"RIFF....not audio")
    rows.append({"track_id": "f" * 16, "uri": str(tmp_path / "broken.wav"), "sha256": "f" * 64})
    tracks = pd.DataFrame(rows)
    validator = Validator()
    stored = {}
    for backend in ("numpy", "torch"):
        settings = ChorusSettings(state_dir=tmp_path / backend, features={
            "n_mels": 64, "backend": backend, "torch_device": "cpu", "device_batch": 2})
        assert settings.features.config_hash() == FeatureSettings(n_mels=64).config_hash()  # same feature set
        root = tmp_path / backend / "features"
        shard = plan_shards(tracks, settings.features, root)[0]
        with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
            result = stages.extract_shard(shard, settings, client, validator=validator)
        assert not result.get("failed") and result["tracks"] == 3
        assert [r["track_id"] for r in result["rejected"]] == ["f" * 16]  # quarantined, the batch went on
        write_index(tracks, settings.features, root)
        stored[backend] = load_features(root, settings.features)
        assert read_meta(shard.path)["extractor"]["backend"] == backend  # provenance in the shard
    numpy_set, torch_set = stored["numpy"], stored["torch"]
    pd.testing.assert_frame_equal(numpy_set.segments, torch_set.segments)
    for name in ("logmel", "harmonic", "percussive"):
        assert np.abs(numpy_set.maps[name] - torch_set.maps[name]).max() <= 1e-3
    assert np.abs(numpy_set.mfcc_stats - torch_set.mfcc_stats).max() <= 1e-2


def test_auto_backend_uses_numpy_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: auto picks torch")
    assert type(extractor_for(FeatureSettings(backend="auto"))) is FeatureExtractor
