"""Search: code packing, faiss indexes (build, save, load, modes), degraded copies, the benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from chorus.config import DegradedQuerySettings
from chorus.errors import InputError
from chorus.metrics.retrieval import cosine_distance, hamming_distance, rerank_distance, top_k
from chorus.search import SearchIndex, hamming_scan, pack_codes, unpack_codes
from chorus.search.degraded import check_tracks, degraded_copies, track_rng
from conftest import bench_figures


def _clustered(n=600, dims=16, bits=32, clusters=12, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dims))
    vectors = centres[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, dims))
    codes = np.where(vectors @ rng.standard_normal((dims, bits)) >= 0, 1.0, -1.0)
    return np.array([f"t{i:04d}" for i in range(n)], dtype=object), vectors.astype(np.float32), codes


def test_packing_round_trips_and_puts_the_first_output_in_the_high_bit():
    codes = np.where(np.random.default_rng(1).standard_normal((5, 24)) >= 0, 1.0, -1.0)
    packed = pack_codes(codes)
    assert packed.shape == (5, 3) and packed.dtype == np.uint8
    np.testing.assert_array_equal(unpack_codes(packed, 24), codes)
    one_bit = -np.ones((1, 8))
    one_bit[0, 0] = 1.0
    assert pack_codes(one_bit)[0, 0] == 0b1000_0000
    assert pack_codes(np.zeros((1, 8)))[0, 0] == 0xFF  # 0 is a 1 bit, as sign() >= 0 decides
    with pytest.raises(ValueError, match="multiple of 8"):
        pack_codes(np.ones((2, 12)))


def test_numpy_scan_agrees_with_the_hamming_distance_of_signs():
    _, _, codes = _clustered(200)
    d, ids = hamming_scan(pack_codes(codes[:20]), pack_codes(codes), k=7)
    full = hamming_distance(codes)[:20]
    np.testing.assert_array_equal(d, np.sort(full, axis=1)[:, :7])
    np.testing.assert_array_equal(full[np.arange(20)[:, None], ids], d)
    assert (ids[:, 0] == np.arange(20)).all()  # distance 0 to itself, and the lowest id on ties


def test_index_saves_loads_and_searches_the_same(tmp_path):
    ids, vectors, codes = _clustered()
    index = SearchIndex.build(ids, vectors, codes, {"name": "demo"})
    assert index.meta["hash_index"] == "IndexBinaryFlat" and index.meta["bits"] == 32 and len(index) == 600
    folder = index.save(tmp_path / "idx")
    loaded = SearchIndex.load(folder)
    assert loaded.meta == index.meta
    np.testing.assert_array_equal(loaded.codes, index.codes)
    for mode in ("hash", "semantic", "rerank"):
        a = index.search_tracks(["t0003", "t0100"], k=5, mode=mode)
        b = loaded.search_tracks(["t0003", "t0100"], k=5, mode=mode)
        assert a.equals(b) and len(a) == 10
        assert not ((a["query"] == 0) & (a["track_id"] == "t0003")).any()  # a track is not its own neighbour
    # re-saving swaps the whole index: the link names a new version, the one before stays
    index.save(folder)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["idx"]
    assert folder.is_symlink() and len(list(tmp_path.glob(".idx.v*"))) == 2


def test_modes_rank_by_their_own_distance():
    ids, vectors, codes = _clustered()
    index = SearchIndex.build(ids, vectors, codes, {})
    hash_hits = index.search_tracks(["t0010"], k=10, mode="hash")
    assert hash_hits["hamming"].is_monotonic_increasing
    assert hash_hits["hamming"].tolist() == sorted(hamming_distance(codes)[10][np.arange(600) != 10])[:10]
    semantic = index.search_tracks(["t0010"], k=10, mode="semantic")
    assert semantic["cosine"].is_monotonic_decreasing
    expected = top_k(cosine_distance(vectors), 10)[10]
    assert semantic["track_id"].tolist() == ids[expected].tolist()
    # a shortlist as long as the corpus makes re-ranking the exact cosine ranking
    everything = index.search_tracks(["t0010"], k=10, mode="rerank", rerank_candidates=600)
    assert everything["track_id"].tolist() == semantic["track_id"].tolist()
    shortlist = index.search_tracks(["t0010"], k=10, mode="rerank", rerank_candidates=20)
    assert set(shortlist["track_id"]) <= set(index.search_tracks(["t0010"], k=20, mode="hash")["track_id"])


def test_approximate_indexes_find_most_exact_neighbours(tmp_path):
    ids, vectors, codes = _clustered(n=3000)
    exact = SearchIndex.build(ids, vectors, codes, {})
    approx = SearchIndex.build(ids, vectors, codes, {}, approximate_above=1000, lists=20, probe=4)
    assert approx.meta["hash_index"] == "IndexBinaryIVF" and approx.meta["vector_index"] == "IndexIVFFlat"
    approx = SearchIndex.load(approx.save(tmp_path / "approx"))
    queries = [f"t{i:04d}" for i in range(0, 3000, 60)]
    for mode in ("hash", "semantic"):
        column = "hamming" if mode == "hash" else "cosine"
        a = exact.search_tracks(queries, k=10, mode=mode).groupby("query")[column]
        b = approx.search_tracks(queries, k=10, mode=mode).groupby("query")[column]
        # tie-aware: an approximate hit counts when it is as close as the exact 10th
        kth = a.max() if mode == "hash" else a.min()
        good = [(b.get_group(q) <= kth[q]).mean() if mode == "hash" else (b.get_group(q) >= kth[q] - 1e-6).mean() for q in kth.index]
        assert np.mean(good) >= 0.9, mode


def test_unknown_track_and_missing_index_name_the_problem(tmp_path):
    from chorus.errors import InputError

    ids, vectors, codes = _clustered(50)
    index = SearchIndex.build(ids, vectors, codes, {"name": "demo"})
    with pytest.raises(InputError, match="not in the index"):
        index.search_tracks(["nope"])
    with pytest.raises(InputError, match="chorus index"):
        SearchIndex.load(tmp_path / "missing")


def test_rerank_ranking_orders_the_hamming_shortlist_by_cosine():
    _, vectors, codes = _clustered(80)
    hamming, cosine = hamming_distance(codes), cosine_distance(vectors)
    order = top_k(rerank_distance(hamming, cosine, 15), 15)
    shortlist = top_k(hamming, 15)
    for q in range(80):
        assert set(order[q]) == set(shortlist[q])
        assert np.all(np.diff(cosine[q, order[q]]) >= 0)


def test_degraded_copies_are_what_they_say():
    sr, settings = 22050, DegradedQuerySettings(excerpt_s=2.0, snr_db=20.0, gain_db=-6.0)
    y = (0.1 * np.random.default_rng(3).standard_normal(5 * sr)).astype(np.float32)
    copies = degraded_copies(y, sr, settings, track_rng(0, "abc"))
    again = degraded_copies(y, sr, settings, track_rng(0, "abc"))
    assert all(np.array_equal(copies[k], again[k]) for k in copies)  # the same draws every run
    assert len(copies["excerpt"]) == 2 * sr
    start = int(np.flatnonzero(y == copies["excerpt"][0])[0])
    np.testing.assert_array_equal(copies["excerpt"], y[start : start + 2 * sr])
    np.testing.assert_allclose(np.abs(copies["gain"]).max() / np.abs(y).max(), 10 ** (-6 / 20), rtol=1e-5)
    noise = copies["noise"] - y
    snr = 10 * np.log10(np.mean(y.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
    assert abs(snr - 20.0) < 0.2
    short = degraded_copies(y[: sr], sr, settings, track_rng(0, "abc"))
    assert len(short["excerpt"]) == sr  # a track shorter than the excerpt is queried whole


def test_bench_search_quick_matches_a_numpy_scan(tmp_path):
    figures = bench_figures("search", tmp_path, timeout=300)
    for key in ("n", "bits", "exact_hamming_qps", "approx_hamming_qps", "approx_recall_at_10", "cosine_qps",
                "rerank_recall_at_10", "build_seconds", "numpy_scan_qps"):
        assert key in figures
    assert figures["bits"] == 64 and figures["exact_matches_numpy"] is True
    assert 0.0 <= figures["rerank_recall_at_10"] <= 1.0 and figures["approx_recall_at_10"] >= 0.9


def _saved_index(tmp_path: Path, seed: int) -> tuple[SearchIndex, Path]:
    """A 50-track index saved at ``<tmp_path>/search/swap``."""
    rng = np.random.default_rng(seed)
    index = SearchIndex.build(np.array([f"t{i}" for i in range(50)]), rng.normal(size=(50, 8)),
                              np.where(rng.normal(size=(50, 16)) >= 0, 1.0, -1.0), {"name": "swap"})
    folder = tmp_path / "search" / "swap"
    index.save(folder)
    return index, folder


def test_a_reader_never_sees_no_index_while_it_is_rebuilt(tmp_path):
    """The index swap is one atomic step: a reader polling during repeated rebuilds always finds
    a whole index (index.json and every file of the same version)."""
    import threading

    from chorus.search.index import read_index_meta

    index, folder = _saved_index(tmp_path, seed=1)
    problems: list[str] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                if read_index_meta(folder) is None:
                    problems.append("no index.json")
                SearchIndex.load(folder)
            except Exception as exc:
                problems.append(f"{type(exc).__name__}: {exc}")

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(15):
        index.save(folder)
    done.set()
    reader.join()
    assert problems == []


def test_a_reader_whose_version_is_removed_while_it_reads_reads_the_current_one(tmp_path):
    """Between resolving the link and reading its files, two rebuilds remove the version a reader
    chose, and the removal is half done (its folder still there, its files gone): the reader
    reads the version the link names now instead of failing."""
    index, folder = _saved_index(tmp_path, seed=2)
    chosen: list[Path] = []

    class Interleaved(SearchIndex):
        @classmethod
        def _load_version(cls, version: Path) -> SearchIndex:
            if not chosen:  # the reader is descheduled here while two saves run
                chosen.append(version)
                index.save(folder)
                index.save(folder)
                version.mkdir()  # its removal half done: the folder is there, its files are not
            return super()._load_version(version)

    loaded = Interleaved.load(folder)
    assert len(loaded) == 50 and chosen[0] != folder.resolve()
    # a broken current version is an error, not retried into another
    for name in ("hash.faiss", "index.json"):
        (folder.resolve() / name).unlink()
    with pytest.raises(InputError, match="no search index here"):
        SearchIndex.load(folder)


def test_the_check_queries_every_held_out_track_and_a_seeded_sample_of_the_rest():
    tracks = [f"t{i:03d}" for i in range(180)]
    held_out = set(tracks[::5])  # 36, like the demo's test split
    chosen = check_tracks(tracks, DegradedQuerySettings(tracks=90), held_out)
    assert len(chosen) == 90 and held_out <= set(chosen) and chosen == sorted(chosen)
    assert chosen == check_tracks(list(reversed(tracks)), DegradedQuerySettings(tracks=90), held_out)
    assert check_tracks(tracks, DegradedQuerySettings(tracks=None), held_out) == tracks
    assert check_tracks(tracks[:60], DegradedQuerySettings(tracks=90), held_out) == tracks[:60]


def test_a_save_after_a_killed_save_keeps_the_version_readers_may_hold(tmp_path):
    """A save killed before its swap leaves a version folder without index.json; the next save
    removes it and keeps the whole version before the current one, which readers may have resolved."""
    from chorus.search.index import index_versions

    rng = np.random.default_rng(2)
    index = SearchIndex.build(np.array([f"t{i}" for i in range(20)]), rng.normal(size=(20, 8)),
                              np.where(rng.normal(size=(20, 16)) >= 0, 1.0, -1.0), {"name": "killed"})
    folder = tmp_path / "search" / "killed"
    index.save(folder)
    index.save(folder)
    previous = folder.resolve()
    half = folder.with_name(f".killed.v{10**20}")  # the newest folder, as a killed save leaves it
    half.mkdir()
    (half / "tracks.parquet").write_bytes(b"partial")
    index.save(folder)
    assert index_versions(folder) == [previous, folder.resolve()] and not half.exists()
