from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from chorus import stages
from chorus.config import ChorusSettings


@task(name="global-mood-truth", cache_policy=NO_CACHE)
def global_labels(settings: ChorusSettings) -> dict[str, Any]:
    summary = stages.labels_stage(settings).as_dict()
    get_run_logger().info("labels: %s", summary["counts"])
    return summary
