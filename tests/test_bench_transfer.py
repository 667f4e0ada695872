"""`chorus bench transfer --quick`: the transfer benchmark's whole path on real music (the test
tier's corpus, 20 s excerpts), through the CLI, with its JSON keys and their meaning."""

from __future__ import annotations

import pytest

from conftest import bench_figures

pytestmark = [pytest.mark.real, pytest.mark.slow]


def test_transfer_bench_quick_prints_held_out_accuracy_margins_and_search(tmp_path):
    figures = bench_figures("transfer", tmp_path, timeout=600)
    assert figures["quick"] and figures["labels"] == 3 and set(figures["tracks_per_split"]) == {"train", "valid", "test"}
    held_out = figures["held_out_accuracy"]
    assert set(held_out) == {"paper_cnn", "short_chunk", "mfcc_svm_pso", "musicnn_probe"}
    for row in held_out.values():
        assert 0.0 <= row["ci95"][0] <= row["accuracy"] <= row["ci95"][1] <= 1.0 and 0 < row["majority_baseline"] < 1
    for margin in ("transfer_minus_best_from_scratch", "transfer_minus_mfcc_svm"):
        low, high = figures[margin]["ci95"]
        assert -1.0 <= low <= figures[margin]["mean"] <= high <= 1.0
    # the two hashes on musicnn: ITQ on its embedding, the CRNN hash on its blocks, beside random
    # codes (here one test track per label: no neighbour shares a label, so every figure is 0)
    hashes = figures["held_out_hash_map10"]
    assert set(hashes) == {"musicnn_hash_32", "crnnh_musicnn_32"}
    for row in hashes.values():
        assert 0.0 <= row["ci95"][0] <= row["map10"] <= row["ci95"][1] <= 1.0 and 0 <= row["random_codes_baseline"] < 1
        assert row["n_tracks"] == figures["tracks_per_split"]["test"]
    # similar-song search on musicnn's vectors and their hash: each track found from its degraded copies
    assert figures["search"]["hash"].startswith("transfer-hash-32") and figures["search"]["dims"] == 1506
    assert min(figures["search"]["degraded_found_in_top_k"].values()) >= 0.5
