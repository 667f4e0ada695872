from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from chorus import stages
from chorus.config import ChorusSettings


@task(name="promotion-gate", cache_policy=NO_CACHE)
def promote(settings: ChorusSettings, dry_run: bool = False, trigger: str = "pipeline") -> dict[str, Any]:
    summary = stages.promote_stage(settings, dry_run=dry_run, trigger=trigger).as_dict()
    logger = get_run_logger()
    for name, decision in summary["counts"]["decisions"].items():
        logger.info("%s: %s", name, decision["reason"])
    return summary
