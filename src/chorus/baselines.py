"""The article's classic baselines on scikit-learn and maintained libraries: standardise -> PCA ->
RBF SVM with C and gamma tuned by particle swarm optimisation (Optuna or a grid at the same
budget for comparison), SMOTE (imbalanced-learn), random k-labelsets (scikit-multilearn). The
swarm and the extreme learning machine are written here (no maintained package works; see each)
and tested against known results."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, cross_val_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import LabelBinarizer, StandardScaler
from sklearn.svm import SVC

from chorus.config import SvmSearchSettings
from chorus.training import track_level_score, track_mean

log = logging.getLogger(__name__)


def svm_pipeline(c: float, gamma: float, pca_variance: float, seed: int, smote: bool = False,
                 calibrated: bool = True) -> Any:
    """standardise -> PCA (share of variance) -> [SMOTE] -> RBF SVM; ``calibrated`` adds Platt
    scaling (sigmoid calibration) so the SVM gives probabilities like every other candidate."""
    steps: list[tuple[str, Any]] = [("scale", StandardScaler()), ("pca", PCA(n_components=pca_variance, random_state=seed))]
    svc: Any = SVC(C=c, gamma=gamma, kernel="rbf", random_state=seed)
    if calibrated:
        svc = CalibratedClassifierCV(svc, method="sigmoid", cv=3, ensemble=False)
    if smote:
        from imblearn.over_sampling import SMOTE
        from imblearn.pipeline import Pipeline as ImbPipeline

        return ImbPipeline([*steps, ("smote", SMOTE(random_state=seed, k_neighbors=3)), ("svm", svc)])
    return Pipeline([*steps, ("svm", svc)])


@dataclass
class SearchResult:
    c: float
    gamma: float
    cv_accuracy: float
    evaluations: int
    method: str
    trials: list[dict[str, float]] = field(default_factory=list)


class SvmFitness:
    """Cross-validated accuracy of the SVM pipeline at (log10 C, log10 gamma); folds are grouped
    by track so no track's segments sit on both sides of a fold."""

    def __init__(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray, settings: SvmSearchSettings, seed: int,
                 smote: bool = False) -> None:
        self.x, self.y, self.groups = x, y, groups
        self.settings, self.seed, self.smote = settings, seed, smote
        folds = min(settings.folds, int(np.bincount(np.unique(y, return_inverse=True)[1]).min()) or 2)
        self.cv = StratifiedGroupKFold(n_splits=max(2, folds), shuffle=True, random_state=seed)
        self.trials: list[dict[str, float]] = []

    def __call__(self, log_c: float, log_gamma: float) -> float:
        # No calibration inside the search: Platt scaling is not needed to rank (C, gamma).
        model = svm_pipeline(10**log_c, 10**log_gamma, self.settings.pca_variance, self.seed, self.smote, calibrated=False)
        score = float(cross_val_score(model, self.x, self.y, groups=self.groups, cv=self.cv, scoring="accuracy").mean())
        self.trials.append({"log10_c": float(log_c), "log10_gamma": float(log_gamma), "cv_accuracy": score})
        return score


def _best(fitness: SvmFitness, method: str) -> SearchResult:
    best = max(fitness.trials, key=lambda t: t["cv_accuracy"])
    return SearchResult(10 ** best["log10_c"], 10 ** best["log10_gamma"], best["cv_accuracy"], len(fitness.trials),
                        method, fitness.trials)


def particle_swarm(objective: Any, lower: np.ndarray, upper: np.ndarray, particles: int, iterations: int,
                   seed: int, inertia: float = 0.7298, cognitive: float = 1.49618,
                   social: float = 1.49618) -> tuple[np.ndarray, float]:
    """Global-best particle swarm minimisation (Kennedy & Eberhart 1995, with Clerc's constriction
    coefficients as defaults), positions clipped to the box. Exactly particles x iterations
    evaluations of ``objective(position) -> float``.

    Written here because pyswarms, the usual package, is unmaintained since 2021 and on use
    reconfigures the root logger and writes report.log into the working directory."""
    rng = np.random.default_rng(seed)
    lower, upper = np.asarray(lower, float), np.asarray(upper, float)
    span = upper - lower
    x = rng.uniform(lower, upper, size=(particles, len(lower)))
    v = rng.uniform(-span, span, size=x.shape) * 0.1
    fx = np.array([objective(p) for p in x])
    best_x, best_f = x.copy(), fx.copy()
    g = int(np.argmin(best_f))
    for _ in range(iterations - 1):
        r1, r2 = rng.random(x.shape), rng.random(x.shape)
        v = inertia * v + cognitive * r1 * (best_x - x) + social * r2 * (best_x[g] - x)
        x = np.clip(x + v, lower, upper)
        fx = np.array([objective(p) for p in x])
        better = fx < best_f
        best_x[better], best_f[better] = x[better], fx[better]
        g = int(np.argmin(best_f))
    return best_x[g], float(best_f[g])


def pso_search(fitness: SvmFitness, settings: SvmSearchSettings, seed: int) -> SearchResult:
    """The article's method: particle swarm over (log10 C, log10 gamma), fitness = CV accuracy."""
    particles = min(settings.particles, settings.budget)
    iterations = max(1, settings.budget // particles)
    lower = np.array([settings.log10_c[0], settings.log10_gamma[0]])
    upper = np.array([settings.log10_c[1], settings.log10_gamma[1]])
    particle_swarm(lambda p: -fitness(float(p[0]), float(p[1])), lower, upper, particles, iterations, seed)
    return _best(fitness, "pso")


def optuna_search(fitness: SvmFitness, settings: SvmSearchSettings, seed: int) -> SearchResult:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(lambda t: fitness(t.suggest_float("log10_c", *settings.log10_c),
                                     t.suggest_float("log10_gamma", *settings.log10_gamma)), n_trials=settings.budget)
    return _best(fitness, "optuna")


def grid_search(fitness: SvmFitness, settings: SvmSearchSettings, seed: int) -> SearchResult:
    side = max(2, int(np.sqrt(settings.budget)))
    for log_c in np.linspace(*settings.log10_c, side):
        for log_gamma in np.linspace(*settings.log10_gamma, side):
            fitness(float(log_c), float(log_gamma))
    return _best(fitness, "grid")


SEARCHES = {"pso": pso_search, "optuna": optuna_search, "grid": grid_search}


def tuned_svm(x: np.ndarray, y: np.ndarray, groups: np.ndarray, settings: SvmSearchSettings, seed: int,
              search: str | None = None, smote: bool = False) -> tuple[Any, SearchResult]:
    """Search C and gamma, then fit the pipeline with them on all of ``x``."""
    fitness = SvmFitness(x, y, groups, settings, seed, smote)
    result = SEARCHES[search or settings.search](fitness, settings, seed)
    model = svm_pipeline(result.c, result.gamma, settings.pca_variance, seed, smote).fit(x, y)
    return model, result


class ELMClassifier(ClassifierMixin, BaseEstimator):
    """Extreme learning machine (Huang et al. 2006): a fixed random hidden layer, output weights by
    ridge-regularised least squares on one-hot targets. Inputs are standardised first."""

    def __init__(self, n_hidden: int = 512, alpha: float = 1e-2, random_state: int = 0) -> None:
        self.n_hidden = n_hidden
        self.alpha = alpha
        self.random_state = random_state

    def _hidden(self, x: np.ndarray) -> np.ndarray:
        return np.tanh(((x - self.mean_) / self.scale_) @ self.weights_ + self.bias_)

    def fit(self, x: np.ndarray, y: np.ndarray) -> ELMClassifier:
        rng = np.random.default_rng(self.random_state)
        x = np.asarray(x, np.float64)
        self.mean_, self.scale_ = x.mean(0), x.std(0) + 1e-8
        self.weights_ = rng.normal(0, 1 / np.sqrt(x.shape[1]), (x.shape[1], self.n_hidden))
        self.bias_ = rng.normal(0, 1, self.n_hidden)
        self.binarizer_ = LabelBinarizer(neg_label=-1, pos_label=1).fit(y)
        self.classes_ = self.binarizer_.classes_
        targets = self.binarizer_.transform(y)
        if targets.shape[1] == 1:  # two classes: one column from the binarizer
            targets = np.hstack([-targets, targets])
        h = self._hidden(x)
        self.beta_ = np.linalg.solve(h.T @ h + self.alpha * np.eye(self.n_hidden), h.T @ targets)
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        return self._hidden(np.asarray(x, np.float64)) @ self.beta_

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        z = self.decision_function(x)
        z = np.exp(z - z.max(1, keepdims=True))
        return z / z.sum(1, keepdims=True)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes_[self.decision_function(x).argmax(1)]


def rakel(x: np.ndarray, y: np.ndarray, labelset_size: int, seed: int) -> Any:
    """Random k-labelsets (disjoint, RAkELd) over standardised features; each labelset is a
    multi-class problem over its label combinations, solved by logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from skmultilearn.ensemble import RakelD

    np.random.seed(seed)  # RakelD draws its partition from numpy's global generator
    present = y.sum(0) > 0
    model = Pipeline([("scale", StandardScaler()),
                      ("rakel", RakelD(base_classifier=LogisticRegression(max_iter=2000),
                                       labelset_size=min(labelset_size, max(1, int(present.sum())))))])
    return model.fit(x, y)


LINEAR_PROBE_C = (0.001, 0.01, 0.1, 1.0)


def linear_probe(x: np.ndarray, y: np.ndarray, x_valid: np.ndarray, valid_tracks: np.ndarray, valid_truth: np.ndarray,
                 kind: str, seed: int) -> tuple[Any, float, float]:
    """A linear probe on frozen embeddings: standardised, then logistic regression (one-vs-rest for
    multi-label), class-balanced, its regularisation chosen on the valid split's track-level score.

    Parameters
    ----------
    x : (segments, dims) train embeddings; y : (segments,) class indices, or (segments, labels) 0/1
    x_valid : (segments, dims) valid embeddings; valid_tracks : (segments,) their track ids
    valid_truth : per valid track (sorted by id), as ``track_targets`` gives it

    Returns
    -------
    (fitted pipeline, chosen C, its valid score)
    """
    best: tuple[Any, float, float] | None = None
    for c in LINEAR_PROBE_C:
        logistic = LogisticRegression(C=c, max_iter=2000, class_weight="balanced", random_state=seed)
        model = make_pipeline(StandardScaler(), OneVsRestClassifier(logistic) if kind == "multi" else logistic).fit(x, y)
        _, per_track = track_mean(model.predict_proba(x_valid), valid_tracks)
        score = track_level_score(per_track, valid_truth, kind) if len(x_valid) else float("nan")
        if best is None or score > best[2]:
            best = (model, c, score)
    assert best is not None
    return best


class ItqHasher(BaseEstimator):
    """Iterative quantisation (Gong & Lazebnik, 2011): standardise, PCA to ``bits`` dimensions, then
    the orthogonal rotation that best aligns the projections with the vertices of the hypercube
    (alternating sign codes and an orthogonal Procrustes solve). Unsupervised: a hash of any
    embedding. ``transform`` gives +-1 codes, (n, bits)."""

    def __init__(self, bits: int = 32, iterations: int = 50, random_state: int = 0) -> None:
        self.bits = bits
        self.iterations = iterations
        self.random_state = random_state

    def fit(self, x: np.ndarray, y: Any = None) -> ItqHasher:
        # fewer training vectors than bits (a tiny corpus): the bits PCA cannot give are random hyperplanes
        dims = min(self.bits, x.shape[1], len(x) - 1) if len(x) > 1 else 0
        rng = np.random.default_rng(self.random_state)
        self.scaler_ = StandardScaler().fit(x)
        scaled = self.scaler_.transform(x)
        self.pca_ = PCA(n_components=dims, random_state=self.random_state).fit(scaled) if dims else None
        self.planes_ = rng.normal(size=(x.shape[1], self.bits - dims))
        rotation, _ = np.linalg.qr(rng.normal(size=(dims, dims)))
        if self.pca_ is not None:
            v = self.pca_.transform(scaled)
            for _ in range(self.iterations):
                u, _, wt = np.linalg.svd(np.sign(v @ rotation + 1e-12).T @ v)
                rotation = (u @ wt).T
        self.rotation_ = rotation
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        scaled = self.scaler_.transform(x)
        projected = [scaled @ self.planes_] if self.pca_ is None else [self.pca_.transform(scaled) @ self.rotation_, scaled @ self.planes_]
        return np.sign(np.hstack(projected) + 1e-12).astype(np.float32)

    def to_arrays(self) -> dict[str, list[Any]]:
        """The fitted hasher as plain lists (JSON; no pickle): ``itq_codes`` applies it."""
        pca = self.pca_
        return {"mean": self.scaler_.mean_.tolist(), "scale": self.scaler_.scale_.tolist(),
                "pca_mean": pca.mean_.tolist() if pca is not None else [],
                "components": pca.components_.tolist() if pca is not None else [],
                "rotation": np.asarray(self.rotation_).tolist(), "planes": np.asarray(self.planes_).tolist()}


def itq_codes(arrays: dict[str, list[Any]], x: np.ndarray) -> np.ndarray:
    """+-1 codes, (n, bits), of ``x`` (n, dims) by a hasher stored with ``ItqHasher.to_arrays``:
    the same projections as ``ItqHasher.transform``."""
    scaled = (np.asarray(x, np.float64) - np.asarray(arrays["mean"])) / np.asarray(arrays["scale"])
    parts = [scaled @ np.asarray(arrays["planes"]).reshape(scaled.shape[1], -1)]
    if arrays["components"]:
        parts.insert(0, (scaled - np.asarray(arrays["pca_mean"])) @ np.asarray(arrays["components"]).T @ np.asarray(arrays["rotation"]))
    return np.sign(np.hstack(parts) + 1e-12).astype(np.float32)
