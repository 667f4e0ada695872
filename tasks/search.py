from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from chorus import stages
from chorus.config import ChorusSettings
from chorus_tasks._policies import ONE_RETRY, while_outputs_current


@task(name="build-index", cache_key_fn=while_outputs_current("index", stages.current_index_key), persist_result=True,
      result_serializer="json", **ONE_RETRY)
def build_index(settings: ChorusSettings, if_models: bool = False) -> dict[str, Any]:
    summary = stages.index_stage(settings, if_models=if_models).as_dict()
    get_run_logger().info("index %s (%s): %s", summary["outputs"].get("index", "not built"),
                          "current" if summary["skipped"] else "built", summary["counts"])
    return summary


@task(name="search-queries", cache_policy=NO_CACHE)
def search(settings: ChorusSettings, queries: list[str], k: int | None, mode: str | None, out: str | None) -> dict[str, Any]:
    summary = stages.search_stage(settings, queries, k, mode, out).as_dict()
    get_run_logger().info("search: %s -> %s", summary["counts"], summary["outputs"]["results"])
    return summary
