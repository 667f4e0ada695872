"""Single-label metrics at track level."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
)


@dataclass(frozen=True)
class ClassificationMetrics:
    classes: list[str]
    n: int
    accuracy: float
    balanced_accuracy: float
    majority_baseline: float
    confusion: list[list[int]]  # rows = actual, columns = predicted
    per_class: dict[str, dict[str, float]]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def classification_metrics(actual: list[str], predicted: list[str], classes: list[str]) -> ClassificationMetrics:
    if not actual:
        raise ValueError("no labelled tracks to evaluate")
    matrix = confusion_matrix(actual, predicted, labels=classes)
    precision, recall, f1, support = precision_recall_fscore_support(
        actual, predicted, labels=classes, zero_division=0
    )
    values, counts = np.unique(np.asarray(actual), return_counts=True)
    majority = float(counts.max() / counts.sum())
    return ClassificationMetrics(
        classes=list(classes),
        n=len(actual),
        accuracy=float(accuracy_score(actual, predicted)),
        balanced_accuracy=float(balanced_accuracy_score(actual, predicted)),
        majority_baseline=majority,
        confusion=matrix.astype(int).tolist(),
        per_class={
            c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for c, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
        },
    )


def bootstrap_interval(statistic: Any, n: int, rounds: int = 1000, seed: int = 0) -> dict[str, Any]:
    """95% percentile interval of ``statistic(indices)`` over ``rounds`` resamples of n items
    (tracks), with the point estimate on all of them."""
    rng = np.random.default_rng(seed)
    everything = np.arange(n)
    values = []
    for _ in range(rounds):
        value = statistic(rng.integers(0, n, n))
        if value == value:  # a resample may lack a class: skip NaN
            values.append(value)
    low, high = (np.percentile(values, [2.5, 97.5]) if values else (float("nan"), float("nan")))
    return {"mean": float(statistic(everything)), "ci": [float(low), float(high)]}


def average_precision(truth: np.ndarray, scores: np.ndarray) -> float:
    """Average precision as scikit-learn defines it (sum over distinct thresholds of recall gain x
    precision), in plain numpy: the bootstrap calls it thousands of times."""
    order = np.argsort(-scores, kind="mergesort")
    y, s = truth[order], scores[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the end of each run of tied scores
    tps = np.cumsum(y)[last]
    if tps[-1] == 0:
        return float("nan")
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def macro_average_precision(truth: np.ndarray, scores: np.ndarray) -> float:
    """Macro PR-AUC over the labels that have at least one positive."""
    present = np.flatnonzero(truth.sum(0) > 0)
    if not len(present):
        return float("nan")
    return float(np.mean([average_precision(truth[:, j], scores[:, j]) for j in present]))


def multilabel_metrics(truth: np.ndarray, scores: np.ndarray, labels: list[str], rounds: int = 1000,
                       seed: int = 0) -> dict[str, Any]:
    """PR-AUC (average precision) and ROC-AUC per label, macro and micro, MAP, and the prevalence
    baseline beside each PR-AUC (a constant scorer's average precision is the label's prevalence)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    present = truth.sum(0) > 0
    both = present & (truth.sum(0) < len(truth))
    per_label = {}
    for j, name in enumerate(labels):
        row: dict[str, Any] = {"positives": int(truth[:, j].sum()), "prevalence": float(truth[:, j].mean())}
        if present[j]:
            row["pr_auc"] = float(average_precision_score(truth[:, j], scores[:, j]))
        if both[j]:
            row["roc_auc"] = float(roc_auc_score(truth[:, j], scores[:, j]))
        per_label[name] = row
    prevalence = float(truth[:, present].mean(0).mean()) if present.any() else float("nan")
    # MAP over tracks: each track's ranking of labels (label-ranking average precision).
    from sklearn.metrics import label_ranking_average_precision_score

    has_any = truth.sum(1) > 0
    return {
        "n": int(len(truth)),
        "macro_pr_auc": bootstrap_interval(lambda i: macro_average_precision(truth[i], scores[i]), len(truth), rounds, seed),
        "micro_pr_auc": float(average_precision_score(truth[:, present], scores[:, present], average="micro")) if present.any() else float("nan"),
        "macro_roc_auc": float(roc_auc_score(truth[:, both], scores[:, both], average="macro")) if both.any() else float("nan"),
        "micro_roc_auc": float(roc_auc_score(truth[:, both], scores[:, both], average="micro")) if both.any() else float("nan"),
        "map_tracks": float(label_ranking_average_precision_score(truth[has_any], scores[has_any])) if has_any.any() else float("nan"),
        "prevalence_baseline": prevalence,
        "per_label": per_label,
    }

