from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from chorus import stages
from chorus.compute import DASK_CLIENTS
from chorus.config import ChorusSettings
from chorus.features import Shard
from chorus_tasks._policies import IO_RETRIES


@task(name="plan-feature-shards", cache_policy=NO_CACHE)
def plan(settings: ChorusSettings) -> list[Shard]:
    """Shards of the tracks no stored shard of this feature configuration holds."""
    shards = stages.plan_features(settings)
    get_run_logger().info("%d shards to extract (%d tracks)", len(shards), sum(len(s.tracks) for s in shards))
    return shards


# One task per shard of files (Prefect per-file tasks cost ~0.3 s each on Dask); the per-file work
# is plain Dask inside. A shard that fails is retried whole; its output is committed by rename.
@task(name="extract-shard", cache_policy=NO_CACHE, **IO_RETRIES,
      task_run_name="extract-{shard.key}")
def extract(shard: Shard, settings: ChorusSettings, scheduler: str, priority: int = 0) -> dict[str, Any]:
    result = stages.extract_shard(shard, settings, DASK_CLIENTS.get(scheduler, settings.compute), priority=priority)
    logger = get_run_logger()
    if result.get("failed"):
        logger.error("shard %s failed validation and was not written: %s", shard.path.name, result["failed"])
    else:
        logger.info("shard %s: %s", shard.path.name, {k: v for k, v in result.items() if k != "rejected"})
    for problem in result.get("rejected", []):
        logger.warning("quarantined %s: %s (%s)", problem["uri"], problem["reason"], problem["detail"])
    return result


@task(name="index-features", cache_policy=NO_CACHE)
def finish(settings: ChorusSettings, results: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    return stages.finish_features(settings, results, seconds).as_dict()
