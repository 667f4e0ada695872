"""The classic baselines: the hand-written swarm and ELM against known results, the SVM search's
grouped folds, RAkEL, the MFCC featuriser against librosa, and every candidate served through
one MLflow pyfunc input schema."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_moons

from chorus import baselines
from chorus.config import SvmSearchSettings
from chorus.models.scorer import MfccFeaturiser
from synthetic import synthetic, train_settings
from test_models import _train


def test_particle_swarm_finds_known_minima():
    sphere = lambda p: float((p**2).sum())  # noqa: E731
    x, f = baselines.particle_swarm(sphere, np.full(3, -5.0), np.full(3, 5.0), particles=20, iterations=150, seed=0)
    assert f < 1e-8 and np.abs(x).max() < 1e-4

    def rastrigin(p):  # many local minima, global minimum 0 at the origin
        return float(10 * len(p) + (p**2 - 10 * np.cos(2 * np.pi * p)).sum())

    _, f = baselines.particle_swarm(rastrigin, np.full(2, -5.12), np.full(2, 5.12), particles=40, iterations=100, seed=1)
    assert f < 1e-3

    calls = []
    baselines.particle_swarm(lambda p: calls.append(1) or 0.0, np.zeros(2), np.ones(2), particles=6, iterations=4, seed=0)
    assert len(calls) == 24  # the budget is exact


def test_elm_interpolates_with_as_many_hidden_units_as_samples_and_generalises():
    x, y = make_moons(200, noise=0.1, random_state=0)
    exact = baselines.ELMClassifier(n_hidden=200, alpha=1e-10, random_state=0).fit(x, y)
    assert (exact.predict(x) == y).all()  # Huang et al.: N hidden units fit N samples exactly
    model = baselines.ELMClassifier(n_hidden=64, alpha=1e-2, random_state=0).fit(x[:150], y[:150])
    assert (model.predict(x[150:]) == y[150:]).mean() > 0.9
    assert np.allclose(model.predict_proba(x[:5]).sum(1), 1.0)


def test_svm_search_keeps_each_tracks_segments_in_one_fold():
    x, y = make_classification(90, 8, n_informative=4, n_classes=3, random_state=0)
    groups = np.repeat(np.arange(30), 3)
    y = np.repeat(y[::3], 3)  # one label per track
    fitness = baselines.SvmFitness(x, y, groups, SvmSearchSettings(folds=3), seed=0)
    for train, test in fitness.cv.split(x, y, groups):
        assert not set(groups[train]) & set(groups[test])
    for search in ("pso", "optuna", "grid"):
        model, result = baselines.tuned_svm(x, y, groups, SvmSearchSettings(budget=9, particles=3), seed=0, search=search)
        assert result.evaluations == 9 and result.method == search
        assert result.cv_accuracy > 1 / 3
        assert model.predict_proba(x[:4]).shape == (4, 3)


def test_rakel_scores_every_label():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6))
    y = np.stack([(x[:, 0] > 0), (x[:, 1] > 0), (x[:, 0] + x[:, 2] > 0), np.zeros(120, bool)], axis=1).astype(int)
    model = baselines.rakel(x[:90], y[:90], labelset_size=2, seed=0)
    probs = model.predict_proba(x[90:])
    probs = probs.toarray() if hasattr(probs, "toarray") else probs
    assert probs.shape == (30, 4)
    from sklearn.metrics import average_precision_score

    assert average_precision_score(y[90:, :3], probs[:, :3], average="macro") > 0.8


def test_mfcc_statistics_from_the_stored_log_mel_match_librosa():
    import librosa

    features, _ = synthetic(n_tracks=3, segments=1)
    x = features.stacked()
    stats = MfccFeaturiser(logmel_channel=0, n_mfcc=8)(x)
    mfcc = librosa.feature.mfcc(S=x[1, 0], n_mfcc=8)
    assert stats.shape == (3, 48)
    np.testing.assert_allclose(stats[1, :8], mfcc.mean(1), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(stats[1, 8:16], mfcc.std(1), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["mfcc_svm_pso", "cnn_elm", "cnn_smote_svm"])
def test_sklearn_candidates_learn(name):
    settings = train_settings(epochs=4, learning_rate=1e-2, svm={"budget": 6, "particles": 3, "elm_hidden": 64})
    deps = {}
    if name.startswith("cnn_"):
        deps["paper_cnn"] = _train("paper_cnn", settings).scorer
    trained = _train(name, settings, deps=deps)
    assert trained.summary["valid_score"] > 1 / 3 + 0.2


def test_every_candidate_is_one_pyfunc_schema(tmp_path):
    """A network and an SVM of the same task register with the same input and output schema and
    serve the same predictions as the scorer inside."""
    import mlflow

    from chorus import registry

    registry.configure(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    settings = train_settings(epochs=2, svm={"budget": 4, "particles": 2})
    features, _ = synthetic()
    x = features.stacked()[:5]
    signatures = []
    for name in ("short_chunk", "mfcc_svm_pso"):
        trained = _train(name, settings)
        ref = registry.log_candidate(trained.scorer, "chorus-style", f"key-{name}", {"candidate": name}, trained.history,
                                     {registry.CANDIDATE_TAG: name}, {"labels.json": trained.scorer.contract.labels},
                                     input_example=x[:2])
        # in chorus's experiment, its artifacts under the given folder (not ./mlruns of the cwd)
        assert mlflow.get_run(ref.run_id).info.artifact_uri.startswith((tmp_path / "artifacts").resolve().as_uri())
        served = mlflow.pyfunc.load_model(ref.uri)
        np.testing.assert_allclose(served.predict(x), trained.scorer.scores(x), rtol=1e-5, atol=1e-6)
        signatures.append(served.metadata.signature.to_dict())
        assert registry.version_tags("chorus-style", ref.version)[registry.CANDIDATE_TAG] == name
    assert signatures[0] == signatures[1]


def test_fast_average_precision_equals_scikit_learn_with_ties():
    from sklearn.metrics import average_precision_score

    from chorus.metrics.classification import average_precision, macro_average_precision

    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 40)
        y[0] = 1
        s = np.round(rng.random(40), 1)  # many ties
        assert average_precision(y, s) == pytest.approx(average_precision_score(y, s))
    truth = rng.integers(0, 2, (30, 5))
    truth[:, 4] = 0  # a label with no positive is left out, as with average="macro" on present labels
    scores = rng.random((30, 5))
    assert macro_average_precision(truth, scores) == pytest.approx(average_precision_score(truth[:, :4], scores[:, :4]))


def test_retrieval_metrics_on_known_rankings():
    from chorus.metrics.retrieval import (
        compression_curve,
        cosine_distance,
        hamming_distance,
        pca_rotation_codes,
        ranking_metrics,
    )

    # two tight clusters, two segments per track: perfect retrieval
    vectors = np.array([[1, 0.0], [1, 0.1], [0, 1.0], [0.1, 1]])
    labels = np.array(["a", "a", "b", "b"])
    tracks = np.array(["t1", "t1", "t2", "t2"])
    perfect = ranking_metrics(cosine_distance(vectors), labels, tracks, k=1)
    assert perfect["map_at_k"] == 1.0 and perfect["precision_at_k"] == 1.0 and perfect["original_in_top_k"] == 1.0
    swapped = ranking_metrics(cosine_distance(vectors), np.array(["a", "b", "a", "b"]), tracks, k=1)
    assert swapped["precision_at_k"] == 0.0
    codes = np.array([[1, 1, -1], [1, -1, -1]])
    assert hamming_distance(codes)[0, 1] == 1
    rng = np.random.default_rng(0)
    train = rng.normal(size=(50, 8))
    assert pca_rotation_codes(train, train[:5], bits=16).shape == (5, 16)  # 8 PCA bits + 8 LSH bits
    x = rng.normal(size=(80, 6))
    y = (x[:, 0] > 0).astype(int)
    curve = compression_curve(x[:60], y[:60], x[60:], y[60:], dims=[1, 3, 6])
    assert [r["dims"] for r in curve] == [1, 3, 6]
    assert curve[-1]["distortion_rate"] < 1e-10 < curve[0]["distortion_rate"]  # all dimensions: lossless


def test_itq_hash_keeps_neighbours_close_and_copes_with_fewer_vectors_than_bits():
    from chorus.baselines import ItqHasher

    rng = np.random.default_rng(0)
    near, far = rng.normal(0, 1, (60, 100)) + 3, rng.normal(0, 1, (60, 100)) - 3
    hasher = ItqHasher(32).fit(np.vstack([near, far]))
    codes_near, codes_far = hasher.transform(near), hasher.transform(far)
    assert codes_near.shape == (60, 32) and set(np.unique(codes_near)) <= {-1.0, 1.0}
    assert (codes_near[:30] != codes_near[30:]).mean() < 0.1 < 0.9 < (codes_near != codes_far).mean()
    tiny = ItqHasher(32).fit(np.vstack([near[:5], far[:4]]))  # nine vectors: 8 PCA bits, 24 random hyperplanes
    assert tiny.transform(near[:3]).shape == (3, 32)
