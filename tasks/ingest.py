from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from chorus import stages
from chorus.config import ChorusSettings
from chorus_tasks._policies import IO_RETRIES, unless_a_service_is_gone


# Retries only for transient I/O; a validation failure is not transient and is not retried.
def _transient(task: Any, task_run: Any, state: Any) -> bool:
    return isinstance(state.result(raise_on_failure=False), OSError) and unless_a_service_is_gone(task, task_run, state)


@task(name="ingest-corpus", cache_policy=NO_CACHE, **{**IO_RETRIES, "retry_condition_fn": _transient})
def ingest(settings: ChorusSettings) -> dict[str, Any]:
    summary = stages.ingest_stage(settings).as_dict()
    get_run_logger().info("ingest: %s", summary["counts"])
    return summary
