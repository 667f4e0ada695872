"""`chorus bench features --quick`: the benchmark runs end to end, prints its figures as one JSON
line, and chorus's stored maps still agree with the pinned naive librosa chain."""

from __future__ import annotations

import pytest

from conftest import bench_figures

pytestmark = pytest.mark.slow

KEYS = {"clips", "audio_seconds", "naive_rtf", "chorus_rtf_1w", "chorus_rtf_2w", "startup_seconds",
        "speedup_vs_naive_per_core", "speedup_vs_naive_2w", "scaling_2w", "orchestration_overhead",
        "orchestration_overhead_1w", "max_abs_db_diff"}


def test_quick_features_benchmark_agrees_with_the_reference(tmp_path):
    figures = bench_figures("features", tmp_path, timeout=600)
    assert KEYS <= set(figures)
    assert figures["quick"] is True and figures["clips"] == 4 and figures["audio_seconds"] > 10
    assert figures["max_abs_db_diff"] <= 0.01
    assert figures["naive_rtf"] > 0 and figures["chorus_rtf_2w"] > 0
    assert next(iter(figures)) == "speedup_vs_naive_per_core"  # the per-core figure leads
    assert figures["parquet_write_cpu_seconds"] > 0  # the stored set was read back and written again
    # the torch chain (on the CPU here, on CUDA where there is one) against the stored numpy maps
    assert figures["torch_chain"]["max_abs_db_diff_vs_numpy_chain"] <= 0.01
