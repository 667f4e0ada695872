from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from chorus import stages
from chorus.config import ChorusSettings
from chorus_tasks._policies import ONE_RETRY


@task(name="evaluate-model", cache_policy=NO_CACHE, **ONE_RETRY)
def evaluate(settings: ChorusSettings, candidates: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    summary = stages.evaluate_stage(settings, candidates).as_dict()
    get_run_logger().info("evaluate: %s", summary["counts"])
    return summary
