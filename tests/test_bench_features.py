"""`chorus bench features --quick`: the benchmark runs end to end, prints its figures as one JSON
line, and chorus's stored maps still agree with the pinned naive librosa chain."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

KEYS = {"clips", "audio_seconds", "naive_rtf", "chorus_rtf_1w", "chorus_rtf_2w", "startup_seconds",
        "speedup_vs_naive", "scaling_2w", "orchestration_overhead", "max_abs_db_diff"}


def test_quick_features_benchmark_agrees_with_the_reference(tmp_path):
    done = subprocess.run([sys.executable, "-m", "chorus.cli", "--state-dir", str(tmp_path / "state"),
                           "bench", "features", "--quick", "--json"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert KEYS <= set(figures)
    assert figures["quick"] is True and figures["clips"] == 4 and figures["audio_seconds"] > 10
    assert figures["max_abs_db_diff"] <= 0.01
    assert figures["naive_rtf"] > 0 and figures["chorus_rtf_2w"] > 0
