from __future__ import annotations

from typing import Any

from prefect import flow

from chorus.config import ChorusSettings
from flows._common import holding_state, resolve
from tasks import evaluate as evaluate_tasks


@flow(name="evaluate", log_prints=True)
def evaluate(settings: ChorusSettings | None = None, version: int | None = None) -> dict[str, Any]:
    """Score a registered version (default: the evaluate.alias one) and write the report."""
    settings = resolve(settings)
    with holding_state(settings):
        return evaluate_tasks.evaluate(settings, version)
