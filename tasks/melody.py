from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from chorus import stages
from chorus.config import ChorusSettings
from chorus_tasks._policies import ONE_RETRY


@task(name="extract-melodies", cache_policy=NO_CACHE, **ONE_RETRY)
def extract_melodies(settings: ChorusSettings) -> dict[str, Any]:
    summary = stages.melody_stage(settings).as_dict()
    get_run_logger().info("melody: %s", {k: v for k, v in summary["counts"].items() if k != "judged"})
    return summary


@task(name="hum-query", cache_policy=NO_CACHE)
def hum(settings: ChorusSettings, query: str, k: int | None, out: str | None) -> dict[str, Any]:
    summary = stages.hum_stage(settings, query, k, out).as_dict()
    get_run_logger().info("hum %s: %s", query, [(m["rank"], m["track_id"], m["cost"]) for m in summary["counts"]["matches"]])
    return summary
