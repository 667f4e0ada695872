"""The article's classic baselines and the linear probes: a featuriser (MFCC statistics, or the
embedding of a network candidate) and a scikit-learn estimator chosen by
``CandidateSpec.classifier`` from ``ESTIMATORS``: an SVM tuned by PSO, Optuna or a grid (with
SMOTE where asked), an extreme learning machine, random k-labelsets, a logistic-regression probe
and ITQ hashing."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from chorus import baselines
from chorus.config import TrainSettings
from chorus.families.base import CandidateSpec, Family, Trained, TrainingJob, register_family
from chorus.metrics.retrieval import average_precision_at_k, hamming_distance, top_k
from chorus.models.scorer import EmbeddingFeaturiser, MfccFeaturiser, SklearnScorer
from chorus.training import SegmentSplit, track_level_score, track_mean, track_targets


@dataclass
class Fitted:
    estimator: Any
    params: dict[str, Any]
    valid_score: float | None = None  # where the fit chose on valid itself (the probe's C)


def _logistic(spec: CandidateSpec, x: np.ndarray, train: SegmentSplit, featurise: Callable[[np.ndarray], np.ndarray],
              settings: TrainSettings, valid: SegmentSplit | None = None) -> Fitted:
    assert valid is not None
    valid_truth = track_targets(valid) if len(valid) else np.zeros(0)
    estimator, c, score = baselines.linear_probe(x, train.y, featurise(valid.x), valid.track_ids, valid_truth, spec.kind,
                                                 settings.seed)
    return Fitted(estimator, {"logistic_C": c, "C_grid": list(baselines.LINEAR_PROBE_C)}, score)


def _itq(spec: CandidateSpec, x: np.ndarray, train: SegmentSplit, featurise: Callable[[np.ndarray], np.ndarray],
         settings: TrainSettings, valid: SegmentSplit | None = None) -> Fitted:
    return Fitted(baselines.ItqHasher(spec.bits, random_state=settings.seed).fit(x), {"bits": spec.bits})


def _rakel(spec: CandidateSpec, x: np.ndarray, train: SegmentSplit, featurise: Callable[[np.ndarray], np.ndarray],
           settings: TrainSettings, valid: SegmentSplit | None = None) -> Fitted:
    sv = settings.svm
    return Fitted(baselines.rakel(x, train.y.astype(int), sv.rakel_labelset, settings.seed),
                  {"labelset_size": sv.rakel_labelset})


def _elm(spec: CandidateSpec, x: np.ndarray, train: SegmentSplit, featurise: Callable[[np.ndarray], np.ndarray],
         settings: TrainSettings, valid: SegmentSplit | None = None) -> Fitted:
    sv = settings.svm
    return Fitted(baselines.ELMClassifier(sv.elm_hidden, random_state=settings.seed).fit(x, train.y), {"hidden": sv.elm_hidden})


def _svm(spec: CandidateSpec, x: np.ndarray, train: SegmentSplit, featurise: Callable[[np.ndarray], np.ndarray],
         settings: TrainSettings, valid: SegmentSplit | None = None) -> Fitted:
    estimator, search = baselines.tuned_svm(x, train.y, train.track_ids, settings.svm, settings.seed, spec.search, spec.smote)
    return Fitted(estimator, {"search": search.method, "svm_C": search.c, "svm_gamma": search.gamma,
                              "cv_accuracy": search.cv_accuracy, "search_evaluations": search.evaluations,
                              "pca_components": int(estimator.named_steps["pca"].n_components_), "smote": spec.smote})


ESTIMATORS: dict[str, Callable[..., Fitted]] = {"logistic": _logistic, "itq": _itq, "rakel": _rakel, "elm": _elm,
                                                "svm": _svm}


class SklearnFamily(Family):
    name = "sklearn"
    runtime = "sklearn"

    def train(self, spec: CandidateSpec, job: TrainingJob) -> Trained:
        train, valid = job.splits(spec)
        contract = job.contract(spec)
        started = time.perf_counter()
        if spec.features == "mfcc":
            featuriser: Any = MfccFeaturiser(contract.stored_maps.index("logmel"), job.feature_settings.n_mfcc)
        else:
            featuriser = EmbeddingFeaturiser(job.deps[spec.features])
        if spec.classifier not in ESTIMATORS:
            raise ValueError(f"{spec.name}: unknown classifier {spec.classifier!r}; known: {sorted(ESTIMATORS)}")
        x = featuriser(train.x)
        fitted = ESTIMATORS[spec.classifier](spec, x, train, featuriser, job.settings, valid=valid)
        params: dict[str, Any] = {"features": spec.features, "feature_dims": int(x.shape[1]), "classifier": spec.classifier,
                                  **fitted.params}
        scorer = SklearnScorer(featuriser, fitted.estimator, contract)
        valid_score = fitted.valid_score if fitted.valid_score is not None else sklearn_valid_score(scorer, valid)
        summary = {"valid_score": valid_score, "seconds": round(time.perf_counter() - started, 1), "device": "cpu",
                   "precision": "fp64", "n_train_segments": len(train), "n_valid_segments": len(valid)}
        return Trained(scorer, [], params, summary)

    def key_settings(self, spec: CandidateSpec, settings: TrainSettings) -> dict[str, Any]:
        return {"task": settings.task, "seed": settings.seed, "svm": settings.svm.model_dump(mode="json")}


def sklearn_valid_score(scorer: SklearnScorer, valid: SegmentSplit) -> float:
    """The estimator's track-level score on valid (Hamming mAP@10, relevant = same class, for a hasher)."""
    if len(valid) == 0:
        return float("nan")
    _, per_track = track_mean(scorer.scores(valid.x), valid.track_ids)
    if scorer.contract.kind == "hash":
        k = min(10, len(per_track) - 1)
        if k < 1:
            return float("nan")
        return float(average_precision_at_k(top_k(hamming_distance(per_track), k), track_targets(valid)).mean())
    return track_level_score(per_track, track_targets(valid), scorer.contract.kind)


FAMILY = register_family(SklearnFamily())
