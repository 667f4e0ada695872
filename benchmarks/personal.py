"""`chorus bench personal`: the personalised model's listener heads for a large synthetic crowd
(the voting benchmark's graph generator's users, 20+ tagged songs each), fit in batches on 2
cores: time, peak memory, the projected cost for 10 million listeners spread over a Dask
cluster, and ranking a 10,000-song catalogue for one listener (a matrix product over stored
embeddings) against a per-song loop (the baseline, same run)."""

from __future__ import annotations

import resource
import statistics
import time
from typing import Any

import numpy as np

from chorus.personal.model import PersonalFit, fit_personal_model

FULL = {"listeners": 100_000, "songs": 20_000, "songs_per_listener": (20, 40), "catalogue": 10_000, "dims": 64}
QUICK = {"listeners": 5_000, "songs": 2_000, "songs_per_listener": (20, 30), "catalogue": 10_000, "dims": 64}


def crowd(params: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """Songs with 64-d embeddings; listeners in 8 groups, each group hearing moods through its own
    linear map of the embedding; each listener's truth of 20-40 songs."""
    songs = rng.normal(size=(params["songs"], params["dims"])).astype(np.float32)
    groups = rng.integers(0, 8, params["listeners"])
    maps = rng.normal(size=(8, params["dims"], 12)) / np.sqrt(params["dims"])
    low, high = params["songs_per_listener"]
    counts = rng.integers(low, high + 1, params["listeners"])
    listener = np.repeat(np.arange(params["listeners"]), counts)
    song = rng.integers(0, params["songs"], len(listener))
    heard = np.einsum("sd,gdm->gsm", songs, maps).astype(np.float32)  # (groups, songs, 12): each group's hearing
    scores = 1 / (1 + np.exp(-heard[groups[listener], song]))
    return {"songs": songs, "listener": listener, "song": song, "scores": scores.astype(np.float32),
            "groups": [f"g={g}" for g in groups]}


def run(quick: bool = False, log: Any = print) -> dict[str, Any]:
    params = QUICK if quick else FULL
    rng = np.random.default_rng(0)
    data = crowd(params, rng)
    ids = [f"listener{i}" for i in range(params["listeners"])]
    log(f"{params['listeners']} listeners, {len(data['listener'])} training pairs")
    started = time.perf_counter()
    model = fit_personal_model(data["songs"], np.full((params["songs"], 12), 0.5), data["listener"], data["song"],
                               data["scores"], ids, data["groups"], PersonalFit(dims=24, batch=4096))
    fit_s = time.perf_counter() - started
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    catalogue = rng.normal(size=(params["catalogue"], params["dims"]))
    design = model.design(catalogue)  # stored once per catalogue: (songs, dims + 1)
    vectorised, looped = [], []
    for listener in ids[:20]:
        t0 = time.perf_counter()
        head, _ = model.head(listener)
        ranking = np.argsort(-(design @ head)[:, 0])[:20]
        vectorised.append(1000 * (time.perf_counter() - t0))
    for listener in ids[:3]:
        t0 = time.perf_counter()
        for i in range(0, params["catalogue"], 10):
            model.predict(catalogue[i:i + 1], listener=listener)
        looped.append(10 * 1000 * (time.perf_counter() - t0))  # a tenth of the songs, scaled
    per_listener_ms = 1000 * fit_s / params["listeners"]
    figures = {
        "quick": quick, "listeners": params["listeners"], "training_pairs": int(len(data["listener"])),
        "fit_seconds": round(fit_s, 1), "fit_ms_per_listener": round(per_listener_ms, 3),
        "peak_rss_gib": round(peak_gib, 2),
        "projected_10m_listeners_minutes_here": round(per_listener_ms * 10_000_000 / 60_000, 1),
        "projected_10m_listeners_minutes_on_16_workers": round(per_listener_ms * 10_000_000 / 16 / 60_000, 1),
        "rank_catalogue_ms_median": round(statistics.median(vectorised), 2),
        "rank_catalogue_loop_ms_median": round(statistics.median(looped), 1),
        "ranking_speedup_vs_loop": round(statistics.median(looped) / statistics.median(vectorised), 1),
        "with_own_head": int((model.listeners["songs"] >= 5).sum()), "ranked": len(ranking),
        "targets": {"fit_seconds": 600, "peak_rss_gib": 4, "rank_catalogue_ms_median": 20},
    }
    log(f"fit {figures['fit_seconds']} s ({figures['fit_ms_per_listener']} ms a listener), peak {figures['peak_rss_gib']} GiB, "
        f"ranking {params['catalogue']} songs {figures['rank_catalogue_ms_median']} ms")
    return figures
