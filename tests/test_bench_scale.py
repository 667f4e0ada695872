"""`chorus bench scale --quick`: ingest, features and labels on 100 and 400 synthetic tracks,
each stage in a fresh process; every track is stored and extracted, and the cost per track and
peak memory stay within 2x from the smaller size to the larger (the full run's aim is 1.25x and
1.2x)."""

from __future__ import annotations

from conftest import bench_figures

STAGES = {"ingest", "features", "labels"}
ROW = {"seconds", "seconds_per_track", "flow_rss_mib", "worker_rss_mib", "flow_rss_above_baseline_mib", "rows_written"}


def test_quick_growth_curve_is_flat_per_track(tmp_path):
    figures = bench_figures("scale", tmp_path, timeout=600)
    assert figures["sizes"] == [100, 400]
    for size, stages in figures["per_size"].items():
        assert set(stages) == STAGES and all(set(row) == ROW for row in stages.values())
        assert stages["ingest"]["rows_written"] == int(size)  # every clip stored
        assert stages["features"]["rows_written"] >= int(size)  # at least a segment per clip
        assert stages["labels"]["rows_written"] >= int(size)  # a global truth per track at least
    assert set(figures["per_track_growth_by_stage"]) == STAGES
    assert 0 < figures["per_track_growth"] <= 2.0, figures["per_track_growth_by_stage"]
    assert 0 < figures["rss_growth"] <= 2.0 and 0 < figures["worker_rss_growth"] <= 2.0, figures
    # the gated figures: what one more track costs in time and in memory above the post-import baseline
    assert set(figures["marginal_ms_per_track"]) == STAGES and set(figures["memory_per_added_track_kib"]) == STAGES
    assert all(0 < row["flow_rss_above_baseline_mib"] < row["flow_rss_mib"] for stages in figures["per_size"].values()
               for row in stages.values())
    assert figures["met"]["memory_per_added_track_kib"], figures["memory_per_added_track_kib"]
