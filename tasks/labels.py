from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from prefect import get_run_logger, task

from chorus import stages
from chorus.config import ChorusSettings
from chorus_tasks._policies import ONE_RETRY, while_outputs_current


@task(name="voted-labels", cache_key_fn=while_outputs_current("labels", stages.current_labels_key), persist_result=True,
      result_serializer="json", **ONE_RETRY)
def voted_labels(settings: ChorusSettings) -> dict[str, Any]:
    """Weighted voting; from labels.dask_min_targets personal targets on, their batches run on Dask."""
    from chorus.compute import dask_batch_runner, dask_client

    logger = get_run_logger()
    with ExitStack() as stack:
        runner = None
        targets = stages.personal_target_count(settings)
        if targets >= settings.labels.dask_min_targets:
            client = stack.enter_context(dask_client(settings.compute))
            runner = dask_batch_runner(client)
            logger.info("%d personal targets: batches of %d on Dask at %s", targets, settings.labels.target_batch,
                        client.scheduler.address)
        summary = stages.labels_stage(settings, runner=runner).as_dict()
    logger.info("labels: %s", {k: v for k, v in summary["counts"].items() if k != "rejects"})
    return summary
