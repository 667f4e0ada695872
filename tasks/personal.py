from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from chorus import stages
from chorus.config import ChorusSettings
from chorus_tasks._policies import ONE_RETRY


@task(name="train-personal-mood", cache_policy=NO_CACHE, **ONE_RETRY)
def train_personal(settings: ChorusSettings) -> dict[str, Any]:
    summary = stages.personal_stage(settings).as_dict()
    get_run_logger().info("personal: %s", summary["counts"])
    return summary
