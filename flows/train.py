from __future__ import annotations

import time
from typing import Any

from prefect import flow

from chorus import stages
from chorus.candidates import resolve_candidates
from chorus.config import ChorusSettings
from flows._common import holding_state, resolve
from tasks import train as train_tasks


@flow(name="pretrain", log_prints=True)
def pretrain(settings: ChorusSettings | None = None) -> dict[str, Any]:
    """Pretrain the shared backbone on its pretext task (cached: unchanged inputs reuse it)."""
    settings = resolve(settings)
    with holding_state(settings):
        return train_tasks.pretrain(settings)


@flow(name="train", log_prints=True)
def train(settings: ChorusSettings | None = None, candidates: list[str] | None = None) -> dict[str, Any]:
    """Train the selected candidates (dependencies first), each a task that tracks its run in
    MLflow and registers a version; each name's best new version becomes its challenger."""
    settings = resolve(settings)
    started = time.perf_counter()
    with holding_state(settings):
        results: dict[str, dict[str, Any]] = {}
        for spec in resolve_candidates(candidates or list(settings.train.selected)):
            results.update(train_tasks.train_candidate(settings, spec.name))
        results = train_tasks.set_challengers(results)
    return stages.train_summary(settings, results, started).as_dict()
