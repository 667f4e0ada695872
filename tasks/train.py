from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from chorus import stages
from chorus.config import ChorusSettings


@task(name="train-and-register", cache_policy=NO_CACHE)
def train(settings: ChorusSettings) -> dict[str, Any]:
    logger = get_run_logger()

    def on_epoch(row: dict[str, float]) -> None:
        logger.info("epoch %(epoch)d: loss %(train_loss).4f, valid accuracy %(valid_accuracy).3f", row)

    summary = stages.train_stage(settings, on_epoch=on_epoch).as_dict()
    logger.info("train: %s", summary["counts"])
    return summary
