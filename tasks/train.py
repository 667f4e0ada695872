from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from chorus import stages
from chorus.config import ChorusSettings
from chorus_tasks._policies import ONE_RETRY, progress_in_run_log


def _epoch_logger() -> Any:
    logger = get_run_logger()

    def on_epoch(row: dict[str, Any]) -> None:
        logger.info("%(candidate)s epoch %(epoch)d: loss %(train_loss).4f, validation %(valid_score).3f, "
                    "%(samples_per_s).0f samples/s", row)

    return on_epoch


# A retry resumes from the last epoch's checkpoint, so it costs at most one epoch.
@task(name="train-candidate", task_run_name="train-{candidate}", cache_policy=NO_CACHE, **ONE_RETRY)
def train_candidate(settings: ChorusSettings, candidate: str) -> dict[str, Any]:
    with progress_in_run_log():
        summary = stages.train_stage(settings, on_epoch=_epoch_logger(), candidates=[candidate], assign_challengers=False)
    row = summary.counts["candidates"][candidate]
    get_run_logger().info("%s: %s v%s (%s)", candidate, row["registered"], row["version"],
                          "reused" if row["skipped"] else f"trained, validation {row.get('valid_score')}")
    return summary.counts["candidates"]


@task(name="set-challengers", cache_policy=NO_CACHE)
def set_challengers(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    stages.set_challengers(results)
    return results


@task(name="pretrain-backbone", cache_policy=NO_CACHE, **ONE_RETRY)
def pretrain(settings: ChorusSettings) -> dict[str, Any]:
    summary = stages.pretrain_stage(settings, on_epoch=_epoch_logger()).as_dict()
    get_run_logger().info("pretrain: %s", summary["counts"]["candidates"]["backbone"])
    return summary
