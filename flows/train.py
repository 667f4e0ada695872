from __future__ import annotations

import time
from typing import Any

from prefect import flow

from chorus import stages
from chorus.candidates import resolve_candidates
from chorus.config import ChorusSettings
from flows._common import FLOW_OPTIONS, SettingsParameter, holding_state, resolve
from tasks import train as train_tasks


@flow(name="pretrain", **FLOW_OPTIONS)
def pretrain(settings: ChorusSettings | None = SettingsParameter, epochs: int | None = None) -> dict[str, Any]:
    """Pretrain the shared backbone on its pretext task (cached: unchanged inputs reuse it).

    Args:
        settings: chorus settings laid over those of the process running the flow.
        epochs: Pretraining epochs; empty: train.backbone.epochs.
    """
    settings = resolve(settings, {"train.backbone.epochs": epochs})
    with holding_state(settings):
        return train_tasks.pretrain(settings)


@flow(name="train", **FLOW_OPTIONS)
def train(settings: ChorusSettings | None = SettingsParameter, candidates: list[str] | None = None,
          epochs: int | None = None, task: str | None = None) -> dict[str, Any]:
    """Train the selected candidates (dependencies first), each a task that tracks its run in
    MLflow and registers a version; each name's best new version becomes its challenger.

    Args:
        settings: chorus settings laid over those of the process running the flow.
        candidates: Candidates to train (`chorus candidates` lists them); empty: train.profile's set.
        epochs: Training epochs per network; empty: train.epochs.
        task: A task of the settings' `tasks` (e.g. genre, tags) to train instead of the default ones.
    """
    settings = resolve(settings, {"train.epochs": epochs})
    settings = settings.for_task(task) if task else settings
    started = time.perf_counter()
    with holding_state(settings):
        results: dict[str, dict[str, Any]] = {}
        for spec in resolve_candidates(candidates or list(settings.train.selected)):
            results.update(train_tasks.train_candidate(settings, spec.name))
        results = train_tasks.set_challengers(results)
    return stages.train_summary(settings, results, started).as_dict()
