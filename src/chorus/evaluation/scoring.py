"""Scoring a model on a held-out split: track-level metrics with bootstrap intervals beside the
trivial baseline of its task, and the flat metrics the promotion gate's rules name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from chorus import MOODS
from chorus.features import FeatureSet
from chorus.metrics.classification import (
    average_precision,
    bootstrap_interval,
    classification_metrics,
    macro_average_precision,
    multilabel_metrics,
)
from chorus.metrics.retrieval import (
    average_precision_at_k,
    hamming_distance,
    random_codes_map_at_k,
    top_k,
)
from chorus.models.scorer import Scorer
from chorus.training import segment_split, track_mean, track_targets


def score_candidate(scorer: Scorer, features: FeatureSet, targets: dict[str, Any], labels: list[str], kind: str,
                    rounds: int, seed: int, k: int = 10) -> dict[str, Any]:
    """Track-level test metrics of one scorer with 95% bootstrap intervals, beside the trivial
    baseline of its task; single- and multi-label results also carry ``track_ids`` (sorted) and
    ``arrays`` (per-track truth, per-track scores)."""
    split = segment_split(features, scorer.contract.stored_maps, targets)
    if len(split) == 0:
        raise ValueError(f"{scorer.contract.candidate}: no test segments")
    scores = scorer.scores(split.x)
    track_ids, per_track = track_mean(scores, split.track_ids)
    truth = track_targets(split)
    if kind == "multi":
        metrics = multilabel_metrics(truth, per_track, labels, rounds, seed)
        return {"metric": "macro PR-AUC", "value": metrics["macro_pr_auc"], "baseline_name": "prevalence",
                "baseline": metrics["prevalence_baseline"], **metrics, "track_ids": track_ids.tolist(),
                "arrays": (truth, per_track)}
    if kind == "hash":
        return hash_scores(per_track, truth, k, rounds, seed)
    # Outputs are indexed by the scorer's own classes, targets by the current ones: a champion
    # trained when the class list differed is compared by name, not by position.
    actual = [labels[t] for t in truth]
    predicted = [scorer.contract.labels[p] for p in per_track.argmax(1)]
    correct = np.array([a == p for a, p in zip(actual, predicted, strict=True)], dtype=float)
    shares = np.bincount(truth) / len(truth)
    majority = float(shares.max())
    cm = classification_metrics(actual, predicted, labels)
    return {"metric": "accuracy", "value": bootstrap_interval(lambda i: float(correct[i].mean()), len(correct), rounds, seed),
            "baseline_name": "majority class", "baseline": majority,
            "stratified_random_baseline": float((shares**2).sum()), **cm.as_dict(), "classification": cm,
            "track_ids": track_ids.tolist(), "arrays": (truth, per_track)}


def hash_scores(codes: np.ndarray, truth: np.ndarray, k: int, rounds: int, seed: int) -> dict[str, Any]:
    """Hamming mAP@k of per-track codes (relevant = same label) with its 95% bootstrap interval,
    beside its trivial baseline on the same metric and sample: the mean mAP@k of random codes of
    the same length (``random_codes_map_at_k``).

    Parameters
    ----------
    codes : np.ndarray, shape (n_tracks, bits)
        Real-valued code outputs; a bit is set where the value is >= 0.
    truth : np.ndarray, shape (n_tracks,)
        Each track's label.
    """
    ap = average_precision_at_k(top_k(hamming_distance(codes), k), truth)
    random_codes = random_codes_map_at_k(truth, int(codes.shape[1]), k, seed=seed)
    bit_balance = float(np.abs(np.where(codes >= 0, 1.0, -1.0).mean(0)).mean())
    return {"metric": f"Hamming mAP@{k}", "value": bootstrap_interval(lambda i: float(ap[i].mean()), len(ap), rounds, seed),
            "baseline_name": f"random {codes.shape[1]}-bit codes", "baseline": random_codes["mean"],
            "baseline_interval": random_codes["ci"], "baseline_p95": random_codes["p95"],
            "bits": int(codes.shape[1]), "mean_abs_bit_mean": bit_balance, "n": int(len(truth))}


def gate_metrics(result: dict[str, Any], kind: str) -> dict[str, float]:
    """The flat metrics promotion rules name, from ``score_candidate``'s result."""
    if kind == "multi":
        return {"macro_pr_auc": result["value"]["mean"], "micro_pr_auc": result["micro_pr_auc"],
                "macro_roc_auc": result["macro_roc_auc"]}
    if kind == "hash":
        return {"map_at_10": result["value"]["mean"], "bit_balance": 1.0 - result["mean_abs_bit_mean"]}
    f1 = [c["f1"] for c in result["per_class"].values()]
    return {"accuracy": result["value"]["mean"], "balanced_accuracy": result["balanced_accuracy"],
            "macro_f1": float(sum(f1) / len(f1))}


def planted_mood_scores(scorer: Scorer, features: FeatureSet, tracks: pd.DataFrame, split: str, rounds: int,
                        seed: int) -> dict[str, Any]:
    """The mood tagger against the demo's planted mood (one true mood per track): macro PR-AUC of
    the one-hot planted mood and top-1 accuracy, with chance beside them."""
    chosen = tracks[(tracks["split"] == split) & tracks["mood"].isin(MOODS)]
    hot = {t: np.isin(MOODS, [m]).astype(np.float32) for t, m in zip(chosen["track_id"], chosen["mood"], strict=True)}
    part = segment_split(features, scorer.contract.stored_maps, hot)
    if len(part) == 0:
        return {}
    _, per_track = track_mean(scorer.scores(part.x), part.track_ids)
    truth = track_targets(part)
    top1 = (per_track.argmax(1) == truth.argmax(1)).astype(float)
    return {"n": int(len(truth)),
            "macro_pr_auc": bootstrap_interval(lambda i: macro_average_precision(truth[i], per_track[i]), len(truth), rounds, seed),
            "prevalence_baseline": float(truth[:, truth.sum(0) > 0].mean(0).mean()),
            "top1_accuracy": bootstrap_interval(lambda i: float(top1[i].mean()), len(top1), rounds, seed),
            "chance_top1": float(1 / len(MOODS))}


def tag_prior_scores(tagger: Scorer, features: FeatureSet, targets: dict[str, np.ndarray], vocabulary: list[str],
                     mood_of: Callable[[str], str | None], rounds: int, seed: int) -> dict[str, Any]:
    """A pretrained tagger's tags as a prior for labels the crowd has not given (cold start): each
    label that ``mood_of`` (the synonym table) reaches from the tagger's tags is scored by the
    largest of those tags' probabilities, and judged by its PR-AUC on the true labels of the
    tracks in ``targets`` (track -> 0/1 vector over ``vocabulary``) beside its prevalence."""
    reached: dict[str, list[int]] = {}
    for i, tag in enumerate(tagger.contract.labels):
        mood = mood_of(tag)
        if mood in vocabulary:
            reached.setdefault(mood, []).append(i)
    part = segment_split(features, tagger.contract.stored_maps, targets)
    if not reached or len(part) == 0:
        return {}
    _, per_track = track_mean(tagger.scores(part.x), part.track_ids)
    truth = track_targets(part)
    moods: dict[str, Any] = {}
    for mood, tags in sorted(reached.items()):
        y, prior = truth[:, vocabulary.index(mood)], per_track[:, tags].max(axis=1)
        if 0 < y.sum() < len(y):  # PR-AUC needs positives and negatives
            moods[mood] = {"tags": [tagger.contract.labels[i] for i in tags], "prevalence": float(y.mean()),
                           "pr_auc": bootstrap_interval(lambda i, y=y, p=prior: average_precision(y[i], p[i]), len(y), rounds, seed)}
    return {"n": int(len(truth)), "tagger": tagger.contract.task, "moods": moods}
