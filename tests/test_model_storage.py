"""Registered models and checkpoints load without unpickling: every scorer kind round-trips
through the registry as JSON + safetensors + skops, and a planted pickle is refused, not run."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from chorus import registry
from chorus.errors import UnsafeModelError
from chorus.models.persist import ESTIMATOR_FILE, SCORER_FILE, load_scorer_folder, save_scorer
from synthetic import synthetic, train_settings
from test_models import _train


class Payload:
    """Unpickling this creates ``witness``: proof that a loader ran the file's code."""

    def __init__(self, witness: Path) -> None:
        self.witness = witness

    def __reduce__(self):
        return (Path.touch, (self.witness,))


@pytest.fixture(scope="module")
def scorers():
    settings = train_settings(epochs=1, svm={"budget": 4, "particles": 2},
                              backbone={"epochs": 1, "channels": (8, 16), "tasks": ["style", "mood"]},
                              hashing={"maps_per_layer": 4})
    trained: dict = {}
    for name in ("paper_cnn", "backbone", "crnnh_32", "mfcc_svm_pso", "cnn_elm"):
        trained[name] = _train(name, settings, deps=trained).scorer
    return trained


def test_every_scorer_kind_reloads_from_the_registry_with_the_same_scores(tmp_path, scorers):
    registry.configure(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    x = synthetic()[0].stacked()[:6]
    for name in ("paper_cnn", "crnnh_32", "mfcc_svm_pso", "cnn_elm"):
        ref = registry.log_candidate(scorers[name], f"chorus-{name}", f"key-{name}", {"candidate": name}, [], {}, {},
                                     input_example=x[:2])
        loaded = registry.load_scorer(f"chorus-{name}", ref.version)
        np.testing.assert_allclose(loaded.scores(x), scorers[name].scores(x), rtol=1e-5, atol=1e-6)
        assert loaded.contract == scorers[name].contract
    stored = list((tmp_path / "artifacts").rglob("*"))
    assert not [p for p in stored if p.suffix in (".pkl", ".pickle", ".cloudpickle")]
    assert {p.name for p in stored} >= {SCORER_FILE, "weights.safetensors", ESTIMATOR_FILE, "model_code.py"}


def test_a_pickled_pyfunc_in_the_registry_is_refused_not_run(tmp_path):
    import mlflow
    from mlflow.pyfunc import PythonModel

    registry.configure(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    witness = tmp_path / "ran"

    class Planted(PythonModel):
        def __init__(self) -> None:
            self.payload = Payload(witness)

        def predict(self, context, model_input, params=None):
            return model_input

    with mlflow.start_run():
        mlflow.pyfunc.log_model(name="model", python_model=Planted(), registered_model_name="chorus-style")
    witness.unlink(missing_ok=True)  # logging itself may have unpickled it to validate
    with pytest.raises(UnsafeModelError, match="not a model chorus stored without pickle"):
        registry.load_scorer("chorus-style", 1)
    assert not witness.exists()


def test_planted_files_in_a_scorer_folder_are_refused_not_run(tmp_path, scorers):
    folder = save_scorer(scorers["mfcc_svm_pso"], tmp_path / "svm")
    witness = tmp_path / "ran"
    import skops.io

    skops.io.dump({"estimator": Payload(witness)}, folder / ESTIMATOR_FILE)
    with pytest.raises(UnsafeModelError, match="outside the allowed ones.*Payload"):
        load_scorer_folder(folder)
    assert not witness.exists()
    # a callable of a trusted library is no estimator: numpy.save in a FunctionTransformer would write files
    from sklearn.preprocessing import FunctionTransformer

    skops.io.dump(FunctionTransformer(func=np.save), folder / ESTIMATOR_FILE)
    with pytest.raises(UnsafeModelError, match="numpy.save"):
        load_scorer_folder(folder)

    network = save_scorer(scorers["paper_cnn"], tmp_path / "cnn")
    description = json.loads((network / SCORER_FILE).read_text())
    description["network"] = {"class": "Popen", "args": {"args": ["touch", str(witness)]}}
    (network / SCORER_FILE).write_text(json.dumps(description))
    with pytest.raises(UnsafeModelError, match="not one of the networks chorus builds"):
        load_scorer_folder(network)
    shutil.rmtree(network)
    (tmp_path / "cnn").mkdir()
    (tmp_path / "cnn" / "python_model.pkl").write_bytes(pickle.dumps(Payload(witness)))
    with pytest.raises(UnsafeModelError, match="no scorer.json"):
        load_scorer_folder(tmp_path / "cnn")
    assert not witness.exists()


def test_a_pickled_checkpoint_is_refused_not_run(tmp_path):
    checkpoint = tmp_path / "short_chunk.pt"
    witness = tmp_path / "ran"
    torch.save({"model": Payload(witness)}, checkpoint)
    with pytest.raises(UnsafeModelError, match="not a checkpoint of tensors"):
        _train("short_chunk", train_settings(epochs=1), checkpoint=checkpoint)
    assert not witness.exists()


def test_the_skops_allow_list_is_exactly_what_the_sklearn_families_build(tmp_path):
    """Each sklearn family's estimator, fitted and stored, holds only types skops trusts or
    ESTIMATOR_TYPES lists (a multi-label probe whose label has one class in training included)."""
    import skops.io

    from chorus import baselines
    from chorus.models.persist import ESTIMATOR_TYPES

    rng = np.random.default_rng(0)
    x, y, multi = rng.normal(size=(60, 8)), rng.integers(0, 3, 60), (rng.random((60, 4)) > 0.5).astype(int)
    fitted = [baselines.svm_pipeline(1.0, 0.1, 0.9, 0).fit(x, y), baselines.svm_pipeline(1.0, 0.1, 0.9, 0, smote=True).fit(x, y),
              baselines.ELMClassifier(16, random_state=0).fit(x, y), baselines.ItqHasher(8).fit(x),
              baselines.rakel(x, multi, 2, 0), baselines.linear_probe(x, y, x, np.arange(60).astype(str), y, "single", 0)[0]]
    constant = multi.copy()
    constant[:, 0] = 0  # a label no training segment has: one-vs-rest keeps a constant predictor for it
    fitted.append(baselines.linear_probe(x, constant, x, np.arange(60).astype(str), constant, "multi", 0)[0])
    found: set[str] = set()
    for i, estimator in enumerate(fitted):
        skops.io.dump(estimator, tmp_path / f"{i}.skops")
        found |= set(skops.io.get_untrusted_types(file=tmp_path / f"{i}.skops"))
    assert found <= ESTIMATOR_TYPES and "sklearn.multiclass._ConstantPredictor" in found
    assert {t for t in ESTIMATOR_TYPES if not t.startswith("scipy.sparse.")} <= found  # no stale entry widens the list

