from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from chorus import stages
from chorus.config import ChorusSettings
from chorus_tasks._policies import IO_RETRIES, ONE_RETRY


@task(name="library-catalogue", cache_policy=NO_CACHE, **ONE_RETRY)
def catalogue(settings: ChorusSettings) -> dict[str, Any]:
    """Tags, index and catalogue page of the library (``settings``: the library run's)."""
    summary = stages.library_stage(settings).as_dict()
    get_run_logger().info("library: %s -> %s", summary["counts"], summary["outputs"]["catalogue"])
    return summary


@task(name="library-search", cache_policy=NO_CACHE, **IO_RETRIES)
def search(settings: ChorusSettings, queries: list[str], k: int, mode: str, out: str | None) -> dict[str, Any]:
    summary = stages.library_search_stage(settings, queries, k, mode, out).as_dict()
    get_run_logger().info("library search: %s -> %s", summary["counts"], summary["outputs"]["results"])
    return summary


@task(name="library-tag", cache_policy=NO_CACHE, **IO_RETRIES)
def tag(settings: ChorusSettings, paths: list[str], out: str | None, top_n: int | None = None,
        threshold: float | None = None) -> dict[str, Any]:
    summary = stages.library_tag_stage(settings, paths, out, top_n, threshold).as_dict()
    get_run_logger().info("library tag: %s -> %s", summary["counts"], summary["outputs"]["predictions"])
    return summary
