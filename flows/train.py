from __future__ import annotations

import time
from typing import Any

from prefect import flow

from chorus import stages
from chorus.config import ChorusSettings
from chorus.families import resolve_candidates
from chorus_flows._common import FLOW_OPTIONS, SettingsParameter, holding_state, resolve
from chorus_flows.features import features
from chorus_tasks import demo as demo_tasks
from chorus_tasks import ingest as ingest_tasks
from chorus_tasks import train as train_tasks
from chorus_tasks._policies import limited, task_seconds, training_seconds


@flow(name="pretext-corpus", **FLOW_OPTIONS)
def pretext_corpus(settings: ChorusSettings | None = SettingsParameter) -> dict[str, Any]:
    """The backbone's pretext corpus under <state_dir>/pretext: rendered without the main corpus's
    held-out works, ingested, features extracted (each step skips when its output is current).

    Args:
        settings: chorus settings laid over those of the process running the flow.
    """
    settings = resolve(settings)
    pretext = stages.pretext_settings(settings)
    return {"corpus": limited(demo_tasks.generate_pretext_corpus, task_seconds(settings))(settings),
            "ingest": limited(ingest_tasks.ingest, task_seconds(settings))(pretext),
            "features": features(settings=pretext)}


def _needs_pretext_corpus(settings: ChorusSettings, candidates: list[str]) -> bool:
    return settings.train.backbone.corpus == "rendered" and any(s.task == "pretext" for s in resolve_candidates(candidates))


@flow(name="pretrain", **FLOW_OPTIONS)
def pretrain(settings: ChorusSettings | None = SettingsParameter, epochs: int | None = None) -> dict[str, Any]:
    """Pretrain the shared backbone on its pretext task, on the rendered pretext corpus by default
    (cached: unchanged inputs reuse it).

    Args:
        settings: chorus settings laid over those of the process running the flow.
        epochs: Pretraining epochs; empty: train.backbone.epochs.
    """
    settings = resolve(settings, {"train.backbone.epochs": epochs})
    with holding_state(settings):
        corpus = pretext_corpus(settings) if _needs_pretext_corpus(settings, ["backbone"]) else None
        summary = limited(train_tasks.pretrain, training_seconds(settings, settings.train.backbone.epochs))(settings)
    if corpus:
        summary["counts"]["pretext_corpus"] = {**corpus["corpus"]["counts"],
                                               "extracted_tracks": corpus["features"]["counts"]["tracks"],
                                               "rejected": corpus["features"]["counts"]["rejected"]}
    return summary


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
    started, cpu_at_start = time.perf_counter(), stages.cpu_use()
    selected = candidates or list(settings.train.selected)
    with holding_state(settings):
        if _needs_pretext_corpus(settings, selected):  # the backbone trains (or is looked up) on it
            pretext_corpus(settings)
        results: dict[str, dict[str, Any]] = {}
        for spec in resolve_candidates(selected):
            results.update(limited(train_tasks.train_candidate, training_seconds(settings, settings.train.epochs))(settings, spec.name))
        results = limited(train_tasks.set_challengers, task_seconds(settings))(results)
    return stages.train_summary(settings, results, started, cpu_at_start).as_dict()
