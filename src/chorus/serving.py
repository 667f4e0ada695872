"""The MLflow pyfunc every candidate is registered as: one input (a batch of stored feature maps,
(batch, maps, bands, frames) float32 dB), one output per task (class or label probabilities, or
+-1 hash codes), whatever the scorer inside (a network or a scikit-learn pipeline).

Registered as a model from code: MLflow stores ``chorus/model_code.py`` (which names this class)
and the scorer's folder (``chorus.models.persist``: JSON, safetensors, skops) as the artifact
``scorer``; nothing is pickled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from mlflow.pyfunc import PythonModel

from chorus import DISTRIBUTION

SCORER_ARTIFACT = "scorer"
MODEL_CODE = Path(__file__).with_name("model_code.py")


class ChorusPyfunc(PythonModel):
    def __init__(self, scorer: Any = None) -> None:
        self.scorer = scorer

    def load_context(self, context):
        import chorus.families  # noqa: F401  (registers every family's networks)
        from chorus.models.persist import load_scorer_folder

        self.scorer = load_scorer_folder(Path(context.artifacts[SCORER_ARTIFACT]))

    # No type hints on predict: MLflow would try to derive a schema from them; the explicit
    # tensor signature logged with the model is the contract.
    def predict(self, context, model_input, params=None):
        x = model_input.to_numpy() if hasattr(model_input, "to_numpy") else model_input
        return np.asarray(self.scorer.scores(np.asarray(x, np.float32)), np.float32)


def signature_of(scorer: Any, example: np.ndarray) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    out = scorer.scores(example)
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *example.shape[1:]))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, out.shape[1]))]),
    )


def pip_requirements() -> list[str]:
    """Explicit: MLflow's own inference of requirements takes many seconds per model."""
    from importlib.metadata import version

    packages = ["torch", "numpy", "scikit-learn", "librosa", "imbalanced-learn", "scikit-multilearn", "mlflow",
                "safetensors", "skops"]
    return [f"{p}=={version(p).split('+')[0]}" for p in packages] + [f"{DISTRIBUTION}=={version(DISTRIBUTION)}"]
