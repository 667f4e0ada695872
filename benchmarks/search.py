"""``chorus bench search``: faiss search over ``n`` synthetic items, one core.

Items are clustered (Gaussian clusters in 128-d), so near neighbours are meaningful; each item's
64-bit code is the sign of random projections of its vector (LSH), so codes and vectors agree the
way a model's hash and semantic outputs do. Queries are fresh draws from the same clusters.

Figures (medians of ``repeats`` timed passes over the queries, faiss on one thread):
``exact_hamming_qps`` (IndexBinaryFlat), ``approx_hamming_qps`` and ``approx_recall_at_10``
(IndexBinaryIVF against exact; tie-aware: a returned item counts when its distance is within the
exact 10th distance, since many codes tie at a Hamming distance), ``cosine_qps`` (IndexFlatIP),
``approx_cosine_qps`` / ``approx_cosine_recall_at_10`` (IndexIVFFlat), ``rerank_qps`` and
``rerank_recall_at_10`` (Hamming top ``rerank_candidates`` re-ranked by cosine, against exact
cosine), build times, and the baseline in the same run: a numpy brute-force Hamming scan with a
partial selection of the top 10 (``numpy_scan_qps``, the median of as many passes as faiss gets;
``exact_speedup_vs_numpy``). ``--quick`` uses a small index and checks the
exact faiss results against the numpy scan (``exact_matches_numpy``). The last line printed is one
JSON object.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from chorus.config import SearchSettings

FULL = {"n": 1_000_000, "queries": 1000, "numpy_queries": 20, "clusters": 2000, "repeats": 3}
QUICK = {"n": 20_000, "queries": 200, "numpy_queries": 200, "clusters": 100, "repeats": 1}
BITS, DIMS, K = 64, 128, 10


def clustered_items(n: int, queries: int, clusters: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Unit vectors around ``clusters`` centres and their LSH codes (+-1), for the index and the queries."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIMS)).astype(np.float32)
    planes = rng.standard_normal((DIMS, BITS)).astype(np.float32)

    def draw(m: int) -> tuple[np.ndarray, np.ndarray]:
        vectors = centres[rng.integers(0, clusters, m)] + 0.6 * rng.standard_normal((m, DIMS)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors, np.where(vectors @ planes >= 0, 1.0, -1.0).astype(np.float32)

    items, codes = draw(n)
    query_items, query_codes = draw(queries)
    return items, codes, query_items, query_codes


def timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    """The result of ``fn`` and the median seconds of ``repeats`` runs."""
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - started)
    return result, statistics.median(seconds)


def tie_aware_recall(exact_distances: np.ndarray, found_distances: np.ndarray, k: int = K) -> float:
    """Share of the k results that are as close as the exact k-th neighbour (distance ties count)."""
    kth = exact_distances[:, k - 1 : k]
    return float(((found_distances[:, :k] <= kth) & (found_distances[:, :k] >= 0)).sum(1).mean() / k)


def id_recall(exact_ids: np.ndarray, found_ids: np.ndarray, k: int = K) -> float:
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(exact_ids, found_ids, strict=True)]))


def run(settings: SearchSettings, quick: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    import faiss

    from chorus.search import build_hash_index, build_vector_index, hamming_scan, pack_codes
    from chorus.search.index import rerank

    plan = QUICK if quick else FULL
    faiss.omp_set_num_threads(1)
    log(f"generating {plan['n']:,} items ({plan['clusters']} clusters, {DIMS}-d vectors, {BITS}-bit codes)")
    items, codes, queries, query_codes = clustered_items(plan["n"], plan["queries"], plan["clusters"])
    packed, packed_queries = pack_codes(codes), pack_codes(query_codes)
    lists = settings.ivf_lists or int(np.sqrt(plan["n"]))
    figures: dict[str, Any] = {"n": plan["n"], "bits": BITS, "dims": DIMS, "queries": plan["queries"], "k": K,
                               "threads": 1, "ivf_lists": lists, "ivf_probe": settings.ivf_probe,
                               "rerank_candidates": settings.rerank_candidates}
    build: dict[str, float] = {}

    def built(name: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        index = fn()
        build[name] = round(time.perf_counter() - started, 3)
        log(f"built {name} in {build[name]:.1f} s")
        return index

    exact_hash = built("exact_hamming", lambda: build_hash_index(packed))
    approx_hash = built("approx_hamming", lambda: build_hash_index(packed, True, lists, settings.ivf_probe))
    exact_cos = built("cosine", lambda: build_vector_index(items))
    approx_cos = built("approx_cosine", lambda: build_vector_index(items, True, lists, settings.ivf_probe))
    repeats, nq = plan["repeats"], plan["queries"]

    (exact_d, exact_i), seconds = timed(lambda: exact_hash.search(packed_queries, K), repeats)
    figures["exact_hamming_qps"] = round(nq / seconds, 1)
    (approx_d, _), seconds = timed(lambda: approx_hash.search(packed_queries, K), repeats)
    figures["approx_hamming_qps"] = round(nq / seconds, 1)
    figures["approx_recall_at_10"] = round(tie_aware_recall(exact_d, approx_d), 4)

    (_, cos_i), seconds = timed(lambda: exact_cos.search(queries, K), repeats)
    figures["cosine_qps"] = round(nq / seconds, 1)
    (_, approx_cos_i), seconds = timed(lambda: approx_cos.search(queries, K), repeats)
    figures["approx_cosine_qps"] = round(nq / seconds, 1)
    figures["approx_cosine_recall_at_10"] = round(id_recall(cos_i, approx_cos_i), 4)

    def reranked() -> np.ndarray:
        _, candidates = exact_hash.search(packed_queries, settings.rerank_candidates)
        return rerank(items, queries, candidates, K)

    rerank_i, seconds = timed(reranked, repeats)
    figures["rerank_qps"] = round(nq / seconds, 1)
    figures["rerank_recall_at_10"] = round(id_recall(cos_i, rerank_i), 4)
    figures["hamming_recall_at_10_vs_cosine"] = round(id_recall(cos_i, exact_i), 4)

    m = plan["numpy_queries"]
    (scan_d, scan_i), seconds = timed(lambda: hamming_scan(packed_queries[:m], packed, K), repeats)  # as faiss is
    figures["numpy_scan_qps"] = round(m / seconds, 1)
    figures["exact_speedup_vs_numpy"] = round(figures["exact_hamming_qps"] / figures["numpy_scan_qps"], 1)
    # ids may differ where distances tie; the distances themselves must be identical
    figures["exact_matches_numpy"] = bool(np.array_equal(scan_d, exact_d[:m]))
    figures["build_seconds"] = build
    figures["targets"] = {"exact_hamming_qps >= 100": figures["exact_hamming_qps"] >= 100,
                          "approx_recall_at_10 >= 0.9": figures["approx_recall_at_10"] >= 0.9}
    for key, value in figures.items():
        log(f"{key}: {value}")
    return figures
