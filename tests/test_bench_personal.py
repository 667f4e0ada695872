"""`chorus bench personal --quick`: listener heads for 5,000 synthetic listeners, and ranking a
10,000-song catalogue for one listener as one matrix product."""

from __future__ import annotations

from conftest import bench_figures

KEYS = {"listeners", "training_pairs", "fit_seconds", "fit_ms_per_listener", "peak_rss_gib",
        "projected_10m_listeners_minutes_here", "projected_10m_listeners_minutes_on_16_workers",
        "rank_catalogue_ms_median", "rank_catalogue_loop_ms_median", "ranking_speedup_vs_loop", "with_own_head", "targets"}


def test_quick_personal_benchmark_fits_every_listener_and_ranks_by_one_product(tmp_path):
    figures = bench_figures("personal", tmp_path, timeout=300)
    assert KEYS <= set(figures) and figures["quick"] is True and figures["listeners"] == 5000
    assert figures["with_own_head"] == 5000  # every listener has 20+ songs
    assert figures["rank_catalogue_ms_median"] < 20 and figures["ranking_speedup_vs_loop"] > 10
