"""`chorus bench melody --quick`: the melody index over 3,000 synthetic tunes answers sung
excerpts, with the approximate stage's figures beside exhaustive alignment."""

from __future__ import annotations

from conftest import bench_figures

KEYS = {"tunes", "windows", "index", "build_seconds", "query_ms_median", "query_ms_p95", "exhaustive_query_ms_median",
        "speedup_vs_exhaustive", "recall_of_exhaustive_best", "recall_where_exhaustive_finds_the_tune",
        "top10_overlap_with_exhaustive", "top1_hit_rate",
        "exhaustive_top1_hit_rate", "peak_rss_gib", "targets"}


def test_quick_melody_benchmark_finds_sung_tunes_faster_than_exhaustive_alignment(tmp_path):
    figures = bench_figures("melody", tmp_path, timeout=300)
    assert KEYS <= set(figures) and figures["quick"] is True and figures["tunes"] == 3000
    assert figures["index"] == "IndexIVFFlat"  # the quick form exercises the approximate index
    assert figures["top1_hit_rate"] >= 0.5 and figures["recall_of_exhaustive_best"] >= 0.5
    assert figures["speedup_vs_exhaustive"] > 3
