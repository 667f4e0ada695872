from __future__ import annotations

from typing import Any

from prefect import flow

from chorus.config import ChorusSettings
from flows._common import holding_state, resolve
from tasks import train as train_tasks


@flow(name="train", log_prints=True)
def train(settings: ChorusSettings | None = None) -> dict[str, Any]:
    """Train the style classifier, track it in MLflow and register a version."""
    settings = resolve(settings)
    with holding_state(settings):
        return train_tasks.train(settings)
