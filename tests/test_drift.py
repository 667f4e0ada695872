"""The drift watch on decoded audio: a batch like the training data does not alarm; the same
music resampled to 8 kHz, 12 dB quieter, or music of another style does."""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from chorus.config import FeatureSettings
from chorus.evaluation.drift import CLASS_MIX, compare, drift_html, track_summaries
from chorus.features import extract_track
from conftest import SR, write_wav

SETTINGS = FeatureSettings(hpss=False)
SECONDS = 6.0


def piece(style: str, seed: int) -> np.ndarray:
    """A few seconds of a synthetic style: 'strings' (sustained harmonic tones with vibrato over
    a soft noise floor) or 'drums' (decaying noise bursts on a beat)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SECONDS * SR)) / SR
    if style == "strings":
        f0 = rng.uniform(180, 420)
        vibrato = 1 + 0.004 * np.sin(2 * np.pi * rng.uniform(4, 6) * t)
        y = sum(rng.uniform(0.3, 1.0) / k * np.sin(2 * np.pi * k * f0 * vibrato * t + rng.uniform(0, 6)) for k in range(1, 12))
        y = 0.15 * y + 0.01 * rng.standard_normal(len(t))
    else:
        y = np.zeros_like(t)
        beat = int(SR * rng.uniform(0.25, 0.4))
        for start in range(0, len(t), beat):
            n = min(len(t) - start, beat)
            y[start:start + n] += rng.standard_normal(n) * np.exp(-np.arange(n) / (0.03 * SR)) * rng.uniform(0.3, 0.6)
    return (y * rng.uniform(0.6, 1.2)).astype(np.float32)


def summaries(tmp_path, name: str, clips: list[np.ndarray]):
    ids, maps, mfcc = [], [], []
    for i, y in enumerate(clips):
        features = extract_track(f"{name}{i:03d}", str(write_wav(tmp_path / name / f"{i}.wav", y)), SETTINGS)
        ids += [features.track_id] * len(features.logmel)
        maps.append(features.logmel)
        mfcc.append(features.mfcc_stats)
    return track_summaries(np.array(ids), np.concatenate(maps), np.concatenate(mfcc), SETTINGS.n_mfcc)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return summaries(tmp_path_factory.mktemp("reference"), "ref", [piece("strings", s) for s in range(40)])


@pytest.mark.parametrize("change,alarm", [
    ("none", False),
    ("resampled to 8 kHz", True),
    ("12 dB quieter", True),
    ("another style", True),
])
def test_drift_alarms_on_changed_audio_only(tmp_path, reference, change, alarm):
    seeds = range(1000, 1030)
    clips = [piece("drums" if change == "another style" else "strings", s) for s in seeds]
    if change == "resampled to 8 kHz":
        clips = [soxr.resample(soxr.resample(y, SR, 8000), 8000, SR).astype(np.float32) for y in clips]
    if change == "12 dB quieter":
        clips = [y * 10 ** (-12 / 20) for y in clips]
    result = compare(reference, summaries(tmp_path, "batch", clips))
    assert result.alarm is alarm, result.tests.sort_values("q").head(8).to_string()
    if change == "12 dB quieter":
        assert "level_db" in result.as_dict()["drifted"]
    if change == "resampled to 8 kHz":  # the bands above 4 kHz went quiet; the lowest did not move
        drifted = set(result.as_dict()["drifted"])
        assert "mel_120_127_db" in drifted and "mel_000_007_db" not in drifted


def test_the_predicted_class_mix_is_one_of_the_tests(reference):
    import pandas as pd

    same = compare(reference, reference.iloc[:20], pd.Series(["a", "b"] * 20), pd.Series(["a", "b"] * 10))
    shifted = compare(reference, reference.iloc[:20], pd.Series(["a", "b"] * 20), pd.Series(["a"] * 38 + ["b"] * 2))
    assert CLASS_MIX in set(same.tests["test"]) and CLASS_MIX not in same.as_dict()["drifted"]
    assert CLASS_MIX in shifted.as_dict()["drifted"]
    assert "DRIFT" not in drift_html(same, "drift") and "No drift" in drift_html(same, "drift")
