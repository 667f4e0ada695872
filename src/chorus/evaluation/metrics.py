"""Single-label metrics at track level."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support


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
