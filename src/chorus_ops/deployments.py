"""The deployments `chorus serve` serves (prefect.yaml defines the same ones for a work pool).

- pipeline/nightly-refresh: ingest + features + labels + melody + drift, on orchestration.refresh_cron
- pipeline/weekly-retrain: pretrain + train + personal + promote + index + evaluate, on orchestration.retrain_cron
- <stage>/on-demand for every stage, library/on-demand (your own music), and pipeline/on-demand: run from the UI or
  `prefect deployment run 'ingest/on-demand' -p demo_scale=0.5`

Both schedules use orchestration.timezone. Each deployment runs one flow run at a time (more
queue); runs of different deployments are kept apart by the state lock (a served run waits for
it up to orchestration.served_lock_timeout_s, then fails, audited). Every run has a time limit
(orchestration.flow_timeout_s) and every task one from the settings (chorus_tasks._policies).
"""

from __future__ import annotations

from typing import Any

from prefect import Flow
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron

from chorus.config import ChorusSettings
from chorus_flows.drift import drift
from chorus_flows.evaluate import evaluate
from chorus_flows.features import features
from chorus_flows.ingest import ingest
from chorus_flows.labels import labels
from chorus_flows.library import library
from chorus_flows.melody import hum, melody
from chorus_flows.personal import personal
from chorus_flows.pipeline import REFRESH, RETRAIN, pipeline
from chorus_flows.promote import promote
from chorus_flows.search import index, search
from chorus_flows.tag import tag
from chorus_flows.train import pretrain, train

ON_DEMAND: tuple[Flow[Any, Any], ...] = (ingest, features, labels, melody, drift, pretrain, train, personal, promote, index,
                                          evaluate, tag, search, hum, library, pipeline)


def deployments(settings: ChorusSettings) -> list[RunnerDeployment]:
    """Every chorus deployment, its schedules from ``settings.orchestration``."""
    orchestration = settings.orchestration
    one_at_a_time = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
    common: dict[str, Any] = {"concurrency_limit": one_at_a_time, "tags": ["chorus"]}
    limit = orchestration.flow_timeout_s  # a stuck run fails (audited) instead of holding the state for ever
    scheduled = [
        pipeline.with_options(timeout_seconds=limit).to_deployment(
            "nightly-refresh", schedules=[Cron(orchestration.refresh_cron, timezone=orchestration.timezone)],
            paused=not orchestration.schedules_active, parameters={"stages": list(REFRESH), "trigger": "schedule"},
            description="Nightly: ingest new audio and social data, extract features, vote labels.", **common),
        pipeline.with_options(timeout_seconds=limit).to_deployment(
            "weekly-retrain", schedules=[Cron(orchestration.retrain_cron, timezone=orchestration.timezone)],
            paused=not orchestration.schedules_active, parameters={"stages": list(RETRAIN), "trigger": "schedule"},
            description="Weekly: pretrain, train every candidate, run the promotion gate, index, evaluate.", **common),
    ]
    on_demand = [flow.with_options(timeout_seconds=limit).to_deployment("on-demand", description=f"Run `{flow.name}` now, with parameters "
                                    "(the UI's Custom run, or prefect deployment run -p key=value).", **common)
                 for flow in ON_DEMAND]
    return scheduled + on_demand


def serve(settings: ChorusSettings) -> None:
    """Register the deployments with the Prefect server and run their flow runs here until stopped."""
    from prefect import serve as prefect_serve

    prefect_serve(*deployments(settings), print_starting_message=True)


def deployment_names(settings: ChorusSettings) -> frozenset[str]:
    """``flow/deployment`` of each deployment `chorus serve` registers (what the services wait for)."""
    return frozenset(f"{d.flow_name}/{d.name}" for d in deployments(settings))
