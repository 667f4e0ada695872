"""`chorus bench melody`: the melody index over many synthetic tunes (the query synthesiser's note
model): build time, query latency of the approximate stage + alignment against exhaustive
alignment of every tune (the baseline, same run), and the approximate stage's recall: the share
of queries whose exhaustive best match is in its top 10 (the gated figure; beyond the first, the
exhaustive top 10 are near-ties among unrelated tunes), the same among the queries whose sung tune
exhaustive alignment ranks first (a miss of a wrong best is no loss), and the overlap of the two
top 10s.
Queries are sung excerpts (10% wrong notes, 30 cents drift, transposed, at another tempo) given
as notes: the transcriber's cost is measured in the pipeline's report."""

from __future__ import annotations

import resource
import statistics
import time
from typing import Any

import numpy as np

from chorus.config import MelodySettings
from chorus.melody.index import MelodyIndex
from chorus.melody.synth import LEVELS, random_tune, sung_melody

FULL = {"tunes": 100_000, "notes": 40, "queries": 40, "recall_queries": 40}
QUICK = {"tunes": 3_000, "notes": 40, "queries": 12, "recall_queries": 6}


def run(settings: MelodySettings, quick: bool = False, log: Any = print) -> dict[str, Any]:
    params = QUICK if quick else FULL
    rng = np.random.default_rng(0)
    tunes = {f"t{i:06d}": random_tune(rng, params["notes"]) for i in range(params["tunes"])}
    approximate = settings.model_copy(update={"exhaustive_below": 0, "approximate_above": 0 if quick else
                                              settings.approximate_above})
    started = time.perf_counter()
    index = MelodyIndex(tunes, approximate)
    build_s = time.perf_counter() - started
    log(f"index of {len(tunes)} tunes ({len(index.owner)} windows, {type(index.index).__name__}) in {build_s:.1f} s")
    names = sorted(tunes)
    latency, exhaustive_latency, hits, recall, best_found, exhaustive_hits = [], [], [], [], [], []
    kept: list[bool] = []  # where exhaustive alignment finds the sung tune: does the approximate stage too?
    for q in range(params["queries"]):
        target = names[int(rng.integers(len(names)))]
        start = int(rng.integers(0, params["notes"] - 16))
        sung, _, _ = sung_melody(tunes[target], start, start + 16, LEVELS["wrong10"], rng)
        t0 = time.perf_counter()
        found = index.search(sung, k=10)
        latency.append(1000 * (time.perf_counter() - t0))
        hits.append(found[0].track_id == target)
        if q < params["recall_queries"]:
            t0 = time.perf_counter()
            exact = index.search(sung, k=10, exhaustive=True)
            exhaustive_latency.append(1000 * (time.perf_counter() - t0))
            recall.append(len({m.track_id for m in found} & {m.track_id for m in exact}) / len(exact))
            best_found.append(exact[0].track_id in {m.track_id for m in found})
            exhaustive_hits.append(exact[0].track_id == target)
            if exact[0].track_id == target:
                kept.append(target in {m.track_id for m in found})
    figures = {
        "quick": quick, "tunes": len(tunes), "windows": int(len(index.owner)), "index": type(index.index).__name__,
        "build_seconds": round(build_s, 2),
        "query_ms_median": round(statistics.median(latency), 2),
        "query_ms_p95": round(float(np.percentile(latency, 95)), 2),
        "exhaustive_query_ms_median": round(statistics.median(exhaustive_latency), 2),
        "speedup_vs_exhaustive": round(statistics.median(exhaustive_latency) / statistics.median(latency), 1),
        "recall_of_exhaustive_best": round(float(np.mean(best_found)), 4),
        "recall_where_exhaustive_finds_the_tune": round(float(np.mean(kept)), 4) if kept else None,
        "top10_overlap_with_exhaustive": round(float(np.mean(recall)), 4),
        "top1_hit_rate": round(float(np.mean(hits)), 4),
        "exhaustive_top1_hit_rate": round(float(np.mean(exhaustive_hits)), 4),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "targets": {"query_ms_median": 100, "recall_of_exhaustive_best": 0.95},
    }
    log(f"median query {figures['query_ms_median']} ms (exhaustive {figures['exhaustive_query_ms_median']} ms), "
        f"recall of the exhaustive best {figures['recall_of_exhaustive_best']}, top-1 {figures['top1_hit_rate']}")
    return figures
