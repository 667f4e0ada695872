"""`chorus bench voting --quick`: chorus's personal truths equal the pinned networkx + pandas
reference's on a small generated graph (same entries; scores within float32 rounding)."""

from __future__ import annotations

from conftest import bench_figures

KEYS = {"users", "follows", "tag_rows", "targets", "load_seconds", "global_seconds", "personal_seconds",
        "peak_rss_gib", "naive_seconds_per_target", "speedup_vs_naive"}


def test_quick_voting_benchmark_agrees_with_networkx(tmp_path):
    figures = bench_figures("voting", tmp_path, timeout=300)
    assert KEYS <= set(figures) and figures["quick"] is True
    agreement = figures["agreement"]
    assert agreement["entries"] > 1000 and agreement["same_entries"]
    assert agreement["max_abs_score_diff"] < 1e-5
