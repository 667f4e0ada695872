from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from chorus import stages
from chorus.config import ChorusSettings


@task(name="drift-watch", cache_policy=NO_CACHE)
def drift_watch(settings: ChorusSettings, paths: list[str] | None = None) -> dict[str, Any]:
    summary = stages.drift_stage(settings, paths).as_dict()
    get_run_logger().info("drift: %s", summary["counts"])
    return summary
