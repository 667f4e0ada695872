"""`chorus bench faults --quick`: every injected fault is survived with no record lost or
duplicated, and each fault's files are accounted for (kept or quarantined with a reason)."""

from __future__ import annotations

from conftest import bench_figures

KEYS = {"fault", "survived", "records_in", "records_out", "quarantined", "lost", "duplicated", "recover_seconds"}


def test_quick_fault_table_survives_every_fault(tmp_path):
    figures = bench_figures("faults", tmp_path, timeout=300)
    rows = {row["fault"]: row for row in figures["faults"]}
    assert all(KEYS == set(row) for row in rows.values())
    assert {"truncated_wav", "ogg_count_estimate", "not_a_file_and_symlinks", "beyond_full_scale"} <= set(rows)
    assert all(row["survived"] and row["lost"] == 0 and row["duplicated"] == 0 for row in rows.values()), rows
    assert rows["ogg_count_estimate"]["records_out"] == 1  # a valid Ogg file is kept
    assert rows["not_a_file_and_symlinks"]["quarantined"] == 3 and rows["beyond_full_scale"]["quarantined"] == 1
