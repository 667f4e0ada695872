"""The personalised model as an MLflow pyfunc: input rows of a listener (keyed digest, or empty
with a ``group``) and the encoder's embedding (columns e0..e<d-1>); output the 12 mood scores as
that listener hears the track and the level that answered. Loaded from the model's ``personal``
artifact (safetensors, Parquet, JSON), never from a pickle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from chorus import MOODS

PERSONAL_ARTIFACT = "personal"
MODEL_CODE = Path(__file__).with_name("model_code.py")


class PersonalPyfunc(PythonModel):
    def load_context(self, context):
        from chorus.personal.store import load_personal_model

        self.model = load_personal_model(Path(context.artifacts[PERSONAL_ARTIFACT]))

    def predict(self, context, model_input, params=None):
        return predict_frame(self.model, model_input)


def predict_frame(model: Any, rows: pd.DataFrame) -> pd.DataFrame:
    """Scores per row of ``rows`` (listener, optional group, e0..e<d-1>)."""
    dims = [c for c in rows.columns if c.startswith("e") and c[1:].isdigit()]
    embeddings = rows[sorted(dims, key=lambda c: int(c[1:]))].to_numpy(np.float64)
    out = []
    for i in range(len(rows)):
        listener = rows["listener"].iloc[i] if "listener" in rows.columns else None
        group = rows["group"].iloc[i] if "group" in rows.columns else None
        scores, level = model.predict(embeddings[i:i + 1], listener=listener or None, group=group or None)
        out.append({**dict(zip(MOODS, scores[0].tolist(), strict=True)), "level": level})
    return pd.DataFrame(out)
