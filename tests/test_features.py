"""Features: the full set (log-mel, HPSS maps, MFCC statistics) matches the pinned librosa chain;
one stored shape; fixed dB reference; the short-track rule; incremental, validated shards."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy.ndimage import median_filter

from chorus.audio import AudioProblem
from chorus.config import ComputeSettings, FeatureSettings
from chorus.features import FeatureExtractor, extract_track, load_features, plan_shards, segment, write_index, write_shard
from chorus.features.dsp import centered_moving_median, logmel
from chorus.io import read_meta
from chorus.reference import naive_feature_maps
from conftest import SR, tone, write_wav


def music_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Tones plus clicks plus faint noise, fading out: both HPSS parts carry energy, and one part
    dominates most bins by orders of magnitude (where careless mask arithmetic loses precision)."""
    rng = np.random.default_rng(seed)
    y = tone(seconds, 330.0, 0.2) + tone(seconds, 495.0, 0.1)
    clicks = np.zeros_like(y)
    clicks[:: SR // 4] = 0.8
    fade = np.linspace(1.0, 1e-3, len(y)).astype(np.float32)
    return ((y + clicks + 1e-4 * rng.standard_normal(len(y))) * fade).astype(np.float32)


@pytest.mark.parametrize("shape", [(1025, 200), (64, 7), (5, 40)])
def test_moving_median_equals_scipy_reflect_median(shape):
    x = np.random.default_rng(1).random(shape).astype(np.float32)
    for axis, size in ((1, (1, 31)), (0, (31, 1))):
        assert np.array_equal(centered_moving_median(x, 31, axis), median_filter(x, size=size, mode="reflect"))


@pytest.mark.parametrize("signal", ["music_like", "pure_tone"])
def test_maps_match_the_naive_librosa_chain(tmp_path, signal):
    settings = FeatureSettings()
    # a pure tone: harmonic dominates its bins by orders of magnitude, the percussive mask is tiny
    y = music_like(6.0) if signal == "music_like" else tone(6.0, 440.0, 0.5)
    path = write_wav(tmp_path / "a.wav", y, subtype="FLOAT")
    ours = FeatureExtractor(settings).analyse(
        __import__("chorus.audio", fromlist=["load_mono"]).load_mono(str(path), settings.sample_rate))
    reference = naive_feature_maps(str(path), settings)
    for name in ("logmel", "harmonic", "percussive"):
        assert ours[name].shape == reference[name].shape
        # the benchmark's bound is 0.01 dB; the chain is meant to be exact up to float32 rounding
        assert np.abs(ours[name] - np.maximum(reference[name], settings.db_floor)).max() <= 1e-3, name
    # the parts differ from the mixture (HPSS really ran) and split its energy
    if signal == "pure_tone":
        return
    assert np.abs(ours["harmonic"] - ours["logmel"]).max() > 3.0
    assert np.abs(ours["percussive"] - ours["logmel"]).max() > 3.0


def test_segments_have_one_fixed_shape_and_mfcc_statistics(tmp_path):
    settings = FeatureSettings()
    path = write_wav(tmp_path / "a.wav", music_like(9.0))
    feats = extract_track("t", str(path), settings)
    frames = 1 + int(9.0 * SR) // settings.hop_length
    segments = 1 + (frames - 128) // 128
    for name in ("logmel", "harmonic", "percussive"):
        assert feats.maps[name].shape == (segments, 128, 128) and feats.maps[name].dtype == np.float32
    assert feats.mfcc_stats.shape == (segments, 6 * settings.n_mfcc)
    assert np.allclose(feats.starts_s[:2], [0.0, 128 * 512 / SR])
    # MFCC means of the first segment are the DCT of that segment's log-mel, averaged
    reference = naive_feature_maps(str(path), settings)["mfcc"][:, :128].mean(axis=1)
    assert np.allclose(feats.mfcc_stats[0, : settings.n_mfcc], reference, atol=1e-2)


def test_segment_hop_overlaps_segments(tmp_path):
    settings = FeatureSettings(segment_hop_frames=64, hpss=False)
    path = write_wav(tmp_path / "a.wav", tone(6.0))
    feats = extract_track("t", str(path), settings)
    frames = 1 + int(6.0 * SR) // 512
    assert feats.segments == 1 + (frames - 128) // 64
    assert set(feats.maps) == {"logmel"}
    assert np.array_equal(feats.logmel[0][:, 64:], feats.logmel[1][:, :64])


def test_db_reference_is_fixed_so_loudness_survives():
    settings = FeatureSettings()
    loud, quiet = logmel(tone(3.0, amp=0.5), settings), logmel(tone(3.0, amp=0.05), settings)
    # 10x amplitude = +20 dB everywhere above the floor; a per-segment max reference would erase it.
    assert loud.max() - quiet.max() == pytest.approx(20.0, abs=0.1)
    assert loud.min() >= settings.db_floor


def test_short_track_is_padded_or_rejected_by_rule(tmp_path):
    spec = np.zeros((128, 40), np.float32)
    segs, starts, padded = segment(spec, FeatureSettings(short_track="pad"))
    assert segs.shape == (1, 128, 128) and padded
    assert (segs[0, :, 40:] == FeatureSettings().db_floor).all()
    with pytest.raises(AudioProblem, match="too_short_for_segment"):
        segment(spec, FeatureSettings(short_track="reject"))
    path = write_wav(tmp_path / "short.wav", music_like(1.0))
    feats = extract_track("s", str(path), FeatureSettings(short_track="pad"))
    assert feats.padded and feats.segments == 1 and feats.maps["percussive"].shape == (1, 128, 128)
    with pytest.raises(AudioProblem, match="segment"):
        extract_track("s", str(path), FeatureSettings(short_track="reject"))


def test_non_finite_audio_is_a_quarantined_problem(tmp_path):
    from chorus.features import extract_track_or_problem

    y = tone(2.0)
    y[100] = np.nan
    path = write_wav(tmp_path / "nan.wav", y, subtype="FLOAT")
    problem = extract_track_or_problem("n", str(path), FeatureSettings())
    assert problem["reason"] == "non_finite_samples" and problem["uri"] == str(path)


def test_even_hpss_kernel_is_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="odd"):
        FeatureSettings(hpss_kernel=30)


def _tracks(tmp_path, n, seconds=4.0):
    rows = []
    for i in range(n):
        path = write_wav(tmp_path / f"{i}.wav", tone(seconds, 300 + 100 * i))
        rows.append({"track_id": f"{i:016x}", "uri": str(path), "sha256": f"{i:064x}"})
    return pd.DataFrame(rows)


def _write_all(shards, settings):
    for shard in shards:
        items = [extract_track(t, u, settings) for t, u in zip(shard.tracks.track_id, shard.tracks.uri, strict=True)]
        write_shard(shard, items, settings)


def test_shards_roundtrip_with_metadata(tmp_path):
    settings = FeatureSettings(n_mels=64, shard_size=2)
    tracks = _tracks(tmp_path, 3)
    root = tmp_path / "features"
    shards = plan_shards(tracks, settings, root)
    assert [len(s.tracks) for s in shards] == [2, 1]
    _write_all(shards, settings)
    write_index(tracks, settings, root)
    meta = read_meta(shards[0].path)
    assert meta["config_hash"] == settings.config_hash() and meta["feature_schema_version"] == 2
    assert meta["shape"]["logmel"] == [64, 128] and meta["shape"]["percussive"] == [64, 128]
    assert meta["sample_rate"] == SR and meta["hop_length"] == 512 and meta["n_mels"] == 64
    assert meta["db_reference"] == 1.0 and {"librosa", "bottleneck"} <= set(meta["libraries"])
    schema = pq.read_schema(shards[0].path)
    assert schema.field("harmonic").type.list_size == 64 * 128
    assert schema.field("mfcc_stats").type.list_size == 120
    loaded = load_features(root, settings)
    assert loaded.logmel.shape[1:] == (64, 128) and loaded.stacked().shape[1:] == (3, 64, 128)
    assert loaded.mfcc_stats.shape == (len(loaded.segments), 120)
    assert sorted(loaded.segments.track_id.unique()) == sorted(tracks.track_id)
    only = load_features(root, settings, [tracks.track_id[2]])
    assert set(only.segments.track_id) == {tracks.track_id[2]}


def test_incremental_by_content_and_deleted_output_is_recomputed(tmp_path):
    settings = FeatureSettings(n_mels=32, shard_size=2, hpss=False)
    root = tmp_path / "features"
    tracks = _tracks(tmp_path, 3)
    _write_all(plan_shards(tracks, settings, root), settings)
    assert plan_shards(tracks, settings, root) == []  # everything held: nothing to do
    more = pd.concat([tracks, _tracks(tmp_path / "b", 5).iloc[3:]], ignore_index=True)
    todo = plan_shards(more, settings, root)
    assert [list(s.tracks.track_id) for s in todo] == [list(more.track_id[3:])]  # only the new tracks
    first = sorted((root / settings.config_hash()).glob("shard-*.parquet"))[0]
    lost = set(read_meta(first)["tracks"])
    first.unlink()  # what is on disk decides: its tracks are planned again, the others are not
    assert {t for s in plan_shards(tracks, settings, root) for t in s.tracks.track_id} == lost


def test_changed_setting_writes_to_a_new_folder(tmp_path):
    a, b = FeatureSettings(), FeatureSettings(n_mels=96)
    tracks = pd.DataFrame({"track_id": ["0" * 16], "uri": ["x"], "sha256": ["0" * 64]})
    assert plan_shards(tracks, a, tmp_path)[0].path.parent != plan_shards(tracks, b, tmp_path)[0].path.parent


def test_a_track_failing_the_shard_checks_is_quarantined_and_the_shard_commits_the_rest(tmp_path):
    from chorus import stages
    from chorus.config import ChorusSettings
    from chorus.validation import Validator

    settings = ChorusSettings(state_dir=tmp_path / "state", features={"n_mels": 32, "hpss": False})
    tracks = _tracks(tmp_path, 2)
    # float WAV samples far beyond full scale decode fine; only the shard's dB-range expectation sees them
    write_wav(tmp_path / "1.wav", tone(4.0) * 1e12, subtype="FLOAT")
    shard = plan_shards(tracks, settings.features, tmp_path / "features")[0]
    loud = tracks.loc[tracks["uri"].str.endswith("1.wav"), "track_id"].item()
    result = stages.extract_shard(shard, settings, validator=Validator())
    assert not result.get("failed") and result["tracks"] == 1 and shard.path.exists()
    assert not list(shard.path.parent.glob(".*tmp"))
    [problem] = result["rejected"]
    assert problem["track_id"] == loud and problem["reason"] == "feature_check" and "max_db" in problem["detail"]
    index = write_index(tracks, settings.features, tmp_path / "features")
    assert [r["track_id"] for r in index["rejected"]] == [loud]  # the stage's quarantine file lists it
    stored = load_features(tmp_path / "features", settings.features)
    assert set(stored.segments["track_id"]) == set(tracks["track_id"]) - {loud} and len(stored.segments) == result["segments"]
    # the quarantined track is not planned again: its shard recorded it
    assert plan_shards(tracks, settings.features, tmp_path / "features") == []


@pytest.mark.slow
def test_a_long_file_extracts_in_blocks_under_a_worker_limit_the_whole_track_chain_dies_under(tmp_path):
    """A 40-minute file beside small ones, on a worker limited to 1 GB: extracted block by block,
    it is stored whole. With blocks off, its whole-track STFT and HPSS copies take the worker down;
    tried again alone, it does so again and is quarantined as worker_lost, while the small files
    of its shard are committed and the run does not fail."""
    from distributed import Client

    from chorus import stages
    from chorus.compute import client_security, dask_scheduler
    from chorus.config import ChorusSettings
    from chorus.validation import Validator

    features = {"n_mels": 32, "hpss": True}
    tracks = _tracks(tmp_path, 3)
    long = write_wav(tmp_path / "long.wav", tone(40 * 60.0, 500))
    tracks.loc[1, "uri"] = str(long)
    blocks = ChorusSettings(state_dir=tmp_path / "state", features=features, compute={"workers": 1, "worker_memory_limit": "1GB"})
    whole = ChorusSettings(state_dir=tmp_path / "state", features={**features, "block_seconds": None})
    # as the flow's clients: not the process's default client
    with dask_scheduler(blocks.compute) as address, Client(address, set_as_default=False, security=client_security(address)) as client:
        shard = plan_shards(tracks, blocks.features, tmp_path / "blocks")[0]
        kept = stages.extract_shard(shard, blocks, client, validator=Validator())
        assert not kept.get("failed") and kept["tracks"] == 3 and not kept["rejected"]
        assert kept["segments"] > 40 * 60 / 3  # the long file's ~800 segments are all there
        shard = plan_shards(tracks, whole.features, tmp_path / "whole")[0]
        result = stages.extract_shard(shard, whole, client, validator=Validator())
    assert not result.get("failed") and result["tracks"] == 2 and shard.path.exists()
    [problem] = result["rejected"]
    assert problem["uri"] == str(long) and problem["reason"] == "worker_lost" and "KilledWorker" in problem["detail"]


def _write_or_die_on_a_worker(shard, results, settings):
    """The shard's write, except on a Dask worker, whose process it ends (as the nanny does to a
    worker over its memory limit)."""
    import os

    from distributed import get_worker

    from chorus.features import write_temp_shard

    try:
        get_worker()
    except ValueError:
        return write_temp_shard(shard, results, settings)
    os._exit(1)


def test_a_worker_dying_while_it_writes_the_shard_loses_no_track(tmp_path, monkeypatch):
    """The worker that writes a shard can die (a long file's extraction leaves its memory near the
    limit): its results die with it, so the files are extracted again and the shard is written in
    the flow's process; the run does not fail and no track is lost or quarantined."""
    import cloudpickle
    from distributed import Client

    from chorus.compute import client_security, dask_scheduler
    from chorus.config import ChorusSettings
    from chorus.stages import features as feature_stage
    from chorus.validation import Validator

    cloudpickle.register_pickle_by_value(__import__(__name__))  # the workers cannot import the tests
    monkeypatch.setattr(feature_stage, "write_temp_shard", _write_or_die_on_a_worker)
    settings = ChorusSettings(state_dir=tmp_path / "state", features={"n_mels": 32, "hpss": False}, compute={"workers": 1})
    tracks = _tracks(tmp_path, 3)
    shard = plan_shards(tracks, settings.features, tmp_path / "features")[0]
    with dask_scheduler(settings.compute) as address, Client(address, set_as_default=False, security=client_security(address)) as client:
        result = feature_stage.extract_shard(shard, settings, client, validator=Validator())
        assert len(client.scheduler_info()["workers"]) == 1  # the nanny started it again
    assert not result.get("failed") and result["tracks"] == 3 and not result["rejected"]
    assert set(pd.read_parquet(shard.path, columns=["track_id"])["track_id"]) == set(tracks["track_id"])


def test_a_long_track_in_blocks_equals_the_whole_track_maps(tmp_path):
    """Five minutes at 44.1 kHz (resampled in a stream), in blocks of 30 s: every segment's maps,
    block edges included, equal the whole-track chain's within 0.01 dB, and so do the MFCC
    statistics (whose deltas reach across the edges)."""
    from chorus.features import extract_track

    seconds = 300.0
    t = np.arange(int(seconds * 44100)) / 44100
    rng = np.random.default_rng(3)
    y = (0.2 * np.sin(2 * np.pi * (220 + 40 * np.sin(2 * np.pi * t / 7)) * t)
         + 0.05 * rng.standard_normal(len(t)) * (np.sin(2 * np.pi * t / 3) > 0.5)).astype(np.float32)
    path = tmp_path / "five-minutes.wav"
    import soundfile as sf

    sf.write(path, y, 44100, subtype="FLOAT")
    whole = extract_track("t", str(path), FeatureSettings(block_seconds=None))
    blocks = extract_track("t", str(path), FeatureSettings(block_seconds=30.0))
    assert blocks.segments == whole.segments > 90
    np.testing.assert_array_equal(blocks.starts_s, whole.starts_s)
    for name in ("logmel", "harmonic", "percussive"):
        assert np.abs(blocks.maps[name] - whole.maps[name]).max() <= 0.01, name
    assert np.abs(blocks.mfcc_stats - whole.mfcc_stats).max() <= 1e-3


def test_a_file_late_twice_is_quarantined_as_timeout_and_the_shard_commits_the_rest(tmp_path, monkeypatch):
    """The shard's wait on its files is bounded (the task runs in a thread, where a Prefect
    timeout cannot interrupt a wait): a file not extracted by the shard's limit is tried again
    alone within orchestration.file_timeout_s; late again, it is quarantined as ``timeout``, its
    worker restarted, and the shard commits its other file. The stuck file comes first on the one
    single-threaded worker, so the other waits behind it: it must be tried again on a restarted,
    warmed worker and not be blamed for the stuck file's time."""
    from distributed import Client

    from chorus.compute import client_security, dask_scheduler
    from chorus.config import ChorusSettings
    from chorus.stages import features as feature_stage

    settings = ChorusSettings(state_dir=tmp_path / "state", features={"n_mels": 32, "hpss": True}, compute={"workers": 1},
                              orchestration={"file_timeout_s": 2.0})
    long = _tracks(tmp_path / "long", 1, seconds=30 * 60.0)
    short = _tracks(tmp_path / "short", 1, seconds=4.0).assign(track_id="f" * 16, sha256="f" * 64)
    shard = plan_shards(pd.concat([long, short], ignore_index=True), settings.features, tmp_path / "features")[0]
    assert list(shard.tracks["track_id"]) == [long["track_id"][0], "f" * 16]  # submitted in this order
    monkeypatch.setattr(feature_stage, "shard_seconds", lambda settings, files: 4.0)
    with dask_scheduler(settings.compute) as address, Client(address, set_as_default=False, security=client_security(address)) as client:
        result = feature_stage.extract_shard(shard, settings, client)
        assert len(client.scheduler_info()["workers"]) == 1  # the restarted worker is back
    assert result["tracks"] == 1 and [r["track_id"] for r in result["rejected"]] == [long["track_id"][0]]
    rejected = result["rejected"][0]
    assert rejected["reason"] == "timeout" and "orchestration.file_timeout_s (2 s per file), twice" in rejected["detail"]
    assert set(pd.read_parquet(shard.path, columns=["track_id"])["track_id"]) == {"f" * 16}


def test_a_stage_process_and_its_local_workers_give_arrow_memory_back_to_the_system(tmp_path, monkeypatch):
    """Arrow's default pool (mimalloc) keeps the pages each thread freed, so the features flow's
    process grew with every shard its threads handled; a chorus process and the workers of its
    local cluster allocate Arrow's memory from the system allocator instead."""
    import pyarrow as pa
    from distributed import Client

    from chorus.compute import client_security, dask_scheduler
    from chorus.state import StateDir, apply_runtime_environment, runtime_environment

    state = StateDir(tmp_path / "state")
    for name in runtime_environment(state):  # as a fresh chorus process (and restored afterwards)
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    apply_runtime_environment(state)
    assert pa.default_memory_pool().backend_name == "system"
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL")  # the workers' own setting, not one they inherit
    with dask_scheduler(ComputeSettings(workers=1)) as address, Client(address, set_as_default=False, security=client_security(address)) as client:
        assert set(client.run(lambda: pa.default_memory_pool().backend_name).values()) == {"system"}
