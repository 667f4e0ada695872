"""The MLflow pyfunc every candidate is registered as: one input (a batch of stored feature maps,
(batch, maps, bands, frames) float32 dB), one output per task (class or label probabilities, or
+-1 hash codes), whatever the scorer inside (a network or a scikit-learn pipeline)."""

from __future__ import annotations

from typing import Any

import numpy as np
from mlflow.pyfunc import PythonModel


class ChorusPyfunc(PythonModel):
    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer

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

    packages = ["torch", "numpy", "scikit-learn", "librosa", "imbalanced-learn", "scikit-multilearn", "mlflow"]
    return [f"{p}=={version(p).split('+')[0]}" for p in packages] + ["chorus"]
