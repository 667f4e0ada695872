"""Does search find a track from a degraded copy of its audio? An identical query trivially finds
itself, so each track is queried with another excerpt, with added white noise and with a gain
change, and the original must come back in the top k."""

from __future__ import annotations

import hashlib
from collections.abc import Set as AbstractSet
from typing import Any

import numpy as np
import pandas as pd

from chorus.audio import load_mono
from chorus.config import DegradedQuerySettings, FeatureSettings
from chorus.features import extractor_for
from chorus.search.index import MODES

DEGRADATIONS: tuple[str, ...] = ("excerpt", "noise", "gain")


def track_rng(seed: int, track_id: str) -> np.random.Generator:
    """The same draws for a track on every run and every worker."""
    return np.random.default_rng([seed, int(hashlib.sha256(track_id.encode()).hexdigest()[:12], 16)])


def degraded_copies(y: np.ndarray, sample_rate: int, settings: DegradedQuerySettings,
                    rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``excerpt``: ``excerpt_s`` seconds from a random offset (the whole track if shorter);
    ``noise``: white noise at ``snr_db`` below the track's RMS; ``gain``: scaled by ``gain_db``."""
    length = min(len(y), int(round(settings.excerpt_s * sample_rate)))
    offset = int(rng.integers(0, len(y) - length + 1))
    rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))
    noise = rng.standard_normal(len(y)) * rms * 10 ** (-settings.snr_db / 20)
    return {
        "excerpt": y[offset : offset + length],
        "noise": (y + noise).astype(np.float32),
        "gain": (y * 10 ** (settings.gain_db / 20)).astype(np.float32),
    }


def degraded_maps(track_id: str, uri: str, features: FeatureSettings, settings: DegradedQuerySettings,
                  maps: tuple[str, ...]) -> dict[str, dict[str, np.ndarray]]:
    """Decode a track, degrade it each way and extract each copy's stored maps with the same
    feature code as the corpus (runs on Dask workers: a plain function of plain arguments)."""
    extractor = extractor_for(features)
    y = load_mono(uri, features.sample_rate)
    copies = degraded_copies(y, features.sample_rate, settings, track_rng(settings.seed, track_id))
    return {name: {m: item.maps[m] for m in maps}
            for name, item in ((name, extractor.from_signal(track_id, signal)) for name, signal in copies.items())}


def check_tracks(track_ids: list[str], settings: DegradedQuerySettings,
                 held_out: AbstractSet[str] = frozenset()) -> list[str]:
    """The tracks queried: all, or ``settings.tracks`` of them: every ``held_out`` one, then a
    seeded sample of the others (the held-out figure never rests on a sample)."""
    ordered = sorted(track_ids)
    if settings.tracks is None or settings.tracks >= len(ordered):
        return ordered
    kept = [t for t in ordered if t in held_out]
    others = [t for t in ordered if t not in held_out]
    n = max(0, min(len(others), settings.tracks - len(kept)))
    chosen = np.random.default_rng(settings.seed).choice(len(others), n, replace=False)
    return sorted(kept + [others[i] for i in chosen])


def _shares(table: pd.DataFrame) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    share = table.pivot_table(index="mode", columns="degradation", values="found", aggfunc="mean")
    return ({mode: {d: round(float(share.loc[mode, d]), 4) for d in DEGRADATIONS} for mode in MODES},
            {mode: round(float(share.loc[mode].min()), 4) for mode in MODES})


def degraded_query_check(index: Any, encoder: Any, copies: dict[str, dict[str, dict[str, np.ndarray]]],
                         k: int, rerank_candidates: int, held_out: set[str] | None = None) -> dict[str, Any]:
    """Per mode and degradation: the share of tracks whose original is in the top k, over every
    checked track and over the ``held_out`` ones (the test split's) alone. A near-duplicate check
    (each query is a copy of a track the index holds), not a measure of similar-song quality."""
    rows: list[dict[str, Any]] = []
    for degradation in DEGRADATIONS:
        ids = sorted(copies)
        encoded = [encoder.encode_track(copies[t][degradation]) for t in ids]
        vectors, codes = np.stack([v for v, _ in encoded]), np.stack([c for _, c in encoded])
        for mode in MODES:
            hits = index.search(vectors, codes, k, mode, rerank_candidates)
            for q, track_id in enumerate(ids):
                mine = hits[hits["query"] == q]
                found = mine.loc[mine["track_id"] == track_id, "rank"]
                rows.append({"track_id": track_id, "degradation": degradation, "mode": mode,
                             "rank": int(found.iloc[0]) if len(found) else 0})
    table = pd.DataFrame(rows)
    table["found"] = table["rank"] > 0
    found, worst = _shares(table)
    check: dict[str, Any] = {"what": "near-duplicate retrieval: each track queried with degraded copies of its own audio",
                             "k": k, "tracks": len(copies), "found_in_top_k": found, "worst": worst}
    mine = table[table["track_id"].isin(held_out or set())]
    if len(mine):
        held_found, held_worst = _shares(mine)
        check["held_out"] = {"split": "test", "tracks": int(mine["track_id"].nunique()), "found_in_top_k": held_found,
                             "worst": held_worst}
    return check
