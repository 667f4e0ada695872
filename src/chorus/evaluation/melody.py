"""Judging the melody index (query by humming): where the hummed track ranks, as top-1, top-10
and mean reciprocal rank with bootstrap intervals over queries, beside a random ranking (exact)
and a chroma + DTW audio-matching baseline; and the transcription against the score with
mir_eval (note F-measure on onsets and pitch; raw pitch accuracy of the melody line)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.special import gammaln

from chorus.metrics.classification import bootstrap_interval

CHROMA_HOP = 4096  # samples at 22,050 Hz: about 5 chroma frames per second


def rank_metrics(ranks: np.ndarray, rounds: int, seed: int) -> dict[str, Any]:
    """``ranks``: per query, the 0-based rank of the first relevant track (len(catalogue) or more:
    not found). Top-1, top-10 and MRR with 95% bootstrap intervals over queries."""
    ranks = np.asarray(ranks)
    reciprocal = 1.0 / (ranks + 1.0)
    return {"n": int(len(ranks)),
            "top1": bootstrap_interval(lambda i: float((ranks[i] == 0).mean()), len(ranks), rounds, seed),
            "top10": bootstrap_interval(lambda i: float((ranks[i] < 10).mean()), len(ranks), rounds, seed),
            "mrr": bootstrap_interval(lambda i: float(reciprocal[i].mean()), len(ranks), rounds, seed)}


def _log_choose(n: np.ndarray | int, k: np.ndarray | int) -> np.ndarray:
    n, k = np.asarray(n, float), np.asarray(k, float)
    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)


def random_ranking(n_relevant: np.ndarray, n_catalogue: int) -> dict[str, float]:
    """What a uniformly random ranking of ``n_catalogue`` tracks scores, exactly, averaged over
    queries with ``n_relevant`` relevant tracks each: P(a relevant track in the top k) =
    1 - C(N-R, k) / C(N, k); E[1/rank of the first] = sum_r C(N-r, R-1) / C(N, R) / r."""
    out: dict[str, list[float]] = {"top1": [], "top10": [], "mrr": []}
    for r in np.asarray(n_relevant, int):
        n = n_catalogue
        for key, k in (("top1", 1), ("top10", 10)):
            k = min(k, n)
            out[key].append(float(1 - np.exp(_log_choose(n - r, k) - _log_choose(n, k))) if n - r >= k else 1.0)
        positions = np.arange(1, n - r + 2)
        first = np.exp(_log_choose(n - positions, r - 1) - _log_choose(n, r))
        out["mrr"].append(float((first / positions).sum()))
    return {k: float(np.mean(v)) for k, v in out.items()}


def chroma(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Unit-norm chroma frames of ``audio``, shape (12, frames), about 5 per second."""
    import librosa

    c = librosa.feature.chroma_stft(y=audio, sr=sample_rate, hop_length=CHROMA_HOP, n_fft=8192)
    return c / np.maximum(np.linalg.norm(c, axis=0, keepdims=True), 1e-9)


def chroma_ranking(query: np.ndarray, catalogue: dict[str, np.ndarray]) -> list[str]:
    """The chroma + DTW baseline: each catalogue track's cost is the subsequence DTW cost
    (cosine distance of chroma frames) of the query's chroma in it, the query transposed by the
    optimal transposition index (the shift that best aligns the two tracks' mean chroma, Serra
    et al. 2008); tracks by cost, lowest first."""
    import librosa

    profile = query.mean(axis=1)
    costs = []
    for track, reference in catalogue.items():
        shift = int(np.argmax([np.roll(profile, s) @ reference.mean(axis=1) for s in range(12)]))
        cost = 1.0 - np.roll(query, shift, axis=0).T @ reference
        accumulated = librosa.sequence.dtw(C=cost, subseq=True, backtrack=False)
        costs.append((float(accumulated[-1].min()) / query.shape[1], track))
    return [track for _, track in sorted(costs)]


def note_accuracy(reference: pd.DataFrame, estimate: pd.DataFrame) -> dict[str, float]:
    """mir_eval's note precision, recall and F-measure (onset within 50 ms, pitch within 50
    cents, offsets ignored) of ``estimate`` against ``reference`` (onset_s, offset_s, pitch)."""
    import mir_eval

    if reference.empty or estimate.empty:
        return {"precision": 0.0, "recall": 0.0, "f_measure": 0.0}

    def parts(notes: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        intervals = notes[["onset_s", "offset_s"]].to_numpy(float, copy=True)
        intervals[:, 1] = np.maximum(intervals[:, 1], intervals[:, 0] + 1e-3)
        return intervals, 440.0 * 2 ** ((notes["pitch"].to_numpy(float) - 69) / 12)

    (ri, rp), (ei, ep) = parts(reference), parts(estimate)
    p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(ri, rp, ei, ep, offset_ratio=None)
    return {"precision": float(p), "recall": float(r), "f_measure": float(f)}


def raw_pitch_accuracy(reference: pd.DataFrame, estimate: pd.DataFrame, hop_s: float = 0.01) -> float:
    """mir_eval's raw pitch accuracy of a melody line against the score's, both sampled every
    ``hop_s`` (voiced where a note sounds)."""
    import mir_eval

    end = float(max(reference["offset_s"].max() if len(reference) else 0, estimate["offset_s"].max() if len(estimate) else 0))
    times = np.arange(0, end + hop_s, hop_s)

    def contour(notes: pd.DataFrame) -> np.ndarray:
        f0 = np.zeros(len(times))
        for onset, offset, pitch in notes[["onset_s", "offset_s", "pitch"]].itertuples(index=False):
            f0[(times >= onset) & (times < offset)] = 440.0 * 2 ** ((float(pitch) - 69) / 12)
        return f0

    ref_v, ref_c, est_v, est_c = mir_eval.melody.to_cent_voicing(times, contour(reference), times, contour(estimate))
    if not ref_v.any():
        return float("nan")
    return float(mir_eval.melody.raw_pitch_accuracy(ref_v, ref_c, est_v, est_c))
