from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from chorus import stages
from chorus.config import ChorusSettings
from chorus_tasks._policies import IO_RETRIES


@task(name="tag-files", cache_policy=NO_CACHE, **IO_RETRIES)
def tag(settings: ChorusSettings, paths: list[str], model: str | None, alias: str, out: str | None,
        user: str | None = None, group: str | None = None, top_n: int | None = None,
        threshold: float | None = None) -> dict[str, Any]:
    if user is not None or group is not None:
        summary = stages.listener_tag_stage(settings, paths, user, group, out).as_dict()
    else:
        summary = stages.tag_stage(settings, paths, model, alias, out, top_n, threshold).as_dict()
    get_run_logger().info("tag: %s -> %s", summary["counts"], summary["outputs"]["predictions"])
    return summary
