from __future__ import annotations

from typing import Any

from prefect import flow

from chorus.config import ChorusSettings
from flows._common import holding_state, resolve
from tasks import evaluate as evaluate_tasks


@flow(name="evaluate", log_prints=True)
def evaluate(settings: ChorusSettings | None = None, candidates: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Score the candidates of a training (and the champion) on the held-out split; write the report."""
    settings = resolve(settings)
    with holding_state(settings):
        return evaluate_tasks.evaluate(settings, candidates)
