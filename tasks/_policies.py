"""Task policies: retries for I/O, time limits from the settings, and caching that never hides the
data on disk.

I/O-bound tasks (ingest, feature shards, tagging files) retry three times with exponential backoff
(2, 4, 8 s, jittered so that shards failing together do not retry together); compute-heavy tasks
retry once, training from its last checkpoint.

Caching: a cache key is the stage's input key (content hashes of its inputs + its settings' hash), and
there is one only while the outputs that key produced are on disk and carry it: a deleted or
stale output gives no key, so the task runs and recomputes. Results persist under PREFECT_HOME,
which chorus keeps in the state directory.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from prefect import Task, get_run_logger
from prefect.tasks import exponential_backoff

from chorus.config import ChorusSettings
from chorus.limits import shard_seconds, training_seconds
from chorus.outage import service_outage
from chorus.progress import ProgressEvent, listening

__all__ = ["IO_RETRIES", "ONE_RETRY", "limited", "progress_in_run_log", "shard_seconds", "task_seconds", "training_seconds", "while_outputs_current"]

P = ParamSpec("P")
R = TypeVar("R")

def unless_a_service_is_gone(task: Any, task_run: Any, state: Any) -> bool:
    """A ``retry_condition_fn``: no retry when a service stopped answering (its client has already
    retried for ``orchestration.service_wait_s``; the run fails naming it)."""
    return service_outage(state.result(raise_on_failure=False), None) is None


IO_RETRIES: dict[str, Any] = {"retries": 3, "retry_delay_seconds": exponential_backoff(backoff_factor=2),
                              "retry_jitter_factor": 0.5, "retry_condition_fn": unless_a_service_is_gone}
# compute-heavy tasks: one retry (training resumes from its last checkpoint)
ONE_RETRY: dict[str, Any] = {"retries": 1, "retry_delay_seconds": 5, "retry_condition_fn": unless_a_service_is_gone}


def while_outputs_current(name: str, current_key: Callable[[ChorusSettings], str | None]) -> Callable[..., str | None]:
    """A ``cache_key_fn``: ``<name>-<key>`` while ``current_key(settings)`` finds current outputs."""

    def cache_key(context: Any, inputs: dict[str, Any]) -> str | None:
        key = current_key(inputs["settings"])
        return f"{name}-{key}" if key else None

    return cache_key


def limited(task: Task[P, R], seconds: float) -> Task[P, R]:
    """``task`` with a time limit: past it the run fails with a TimeoutError (retried like any
    failure), so a stuck task cannot hold the state lock for ever."""
    return task.with_options(timeout_seconds=seconds)


def task_seconds(settings: ChorusSettings) -> float:
    return settings.orchestration.task_timeout_s



@contextmanager
def progress_in_run_log() -> Iterator[None]:
    """The progress events this task's own thread reports (chorus.progress), as lines of its run
    log (the Prefect UI shows them): the task subscribes like the terminal does."""
    logger, own = get_run_logger(), threading.get_ident()

    def log_event(event: ProgressEvent) -> None:
        if threading.get_ident() != own or event.kind != "advanced":
            return
        total = f"/{event.total}" if event.total else ""
        logger.info("progress %s: %s%s %s %s", event.stage, event.done if event.done is not None else f"+{event.step}",
                    total, event.unit, event.detail)

    with listening(log_event):
        yield
