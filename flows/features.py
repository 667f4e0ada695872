from __future__ import annotations

import time
from typing import Any

from prefect import flow

from chorus.compute import dask_scheduler
from chorus.config import ChorusSettings
from chorus_flows._common import FLOW_OPTIONS, SettingsParameter, holding_state, resolve
from chorus_tasks import features as feature_tasks
from chorus_tasks._policies import limited, task_seconds


@flow(name="features", **FLOW_OPTIONS)
def features(settings: ChorusSettings | None = SettingsParameter, dask_address: str | None = None,
             shard_size: int | None = None) -> dict[str, Any]:
    """Log-mel, harmonic/percussive log-mel and MFCC statistics for every new track: one task
    per shard, Dask inside (a local cluster, or the scheduler at features.dask_address), Parquet out.

    Args:
        settings: chorus settings laid over those of the process running the flow.
        dask_address: Dask scheduler to extract on (tcp://host:8786); empty: features.dask_address, else a local cluster.
        shard_size: Tracks per Prefect task (one Parquet shard each); empty: features.shard_size.
    """
    settings = resolve(settings, {"features.dask_address": dask_address, "features.shard_size": shard_size})
    with holding_state(settings):
        started = time.perf_counter()
        pending = limited(feature_tasks.plan, task_seconds(settings))(settings)
        results: list[dict[str, Any]] = []
        if pending:  # no cluster start-up when every track is already extracted
            with dask_scheduler(settings.features) as scheduler:
                try:
                    # each shard keeps its own time limit while it waits on its files (a submitted
                    # task runs in a thread, where a Prefect timeout cannot interrupt the wait)
                    futures = [feature_tasks.extract.submit(s, settings, scheduler, priority=-n)
                               for n, s in enumerate(pending)]
                    results = [f.result() for f in futures]
                finally:
                    feature_tasks.close_client(scheduler)
        return limited(feature_tasks.finish, task_seconds(settings))(settings, results, time.perf_counter() - started)
