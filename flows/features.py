from __future__ import annotations

import time
from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from chorus import stages
from chorus.compute import dask_cluster
from chorus.config import ChorusSettings
from chorus_flows._common import FLOW_OPTIONS, SettingsParameter, holding_state, resolve
from chorus_tasks import features as feature_tasks
from chorus_tasks._policies import limited, task_seconds


@flow(name="features", **FLOW_OPTIONS)
def features(settings: ChorusSettings | None = SettingsParameter, dask_address: str | None = None,
             shard_size: int | None = None) -> dict[str, Any]:
    """Log-mel, harmonic/percussive log-mel and MFCC statistics for every new track: one task
    per shard, Dask inside (a local cluster, or the scheduler at compute.address), Parquet out;
    then musicnn's input (16 kHz, 96 bands) when a selected candidate reads it.

    Args:
        settings: chorus settings laid over those of the process running the flow.
        dask_address: Dask scheduler to extract on (tcp://host:8786); empty: compute.address, else a local cluster.
        shard_size: Tracks per Prefect task (one Parquet shard each); empty: features.shard_size.
    """
    settings = resolve(settings, {"compute.address": dask_address, "features.shard_size": shard_size})
    with holding_state(settings):
        configurations = stages.extraction_settings(settings)
        started = time.perf_counter()
        pending = [limited(feature_tasks.plan, task_seconds(c))(c) for c in configurations]
        results: list[list[dict[str, Any]]] = [[] for _ in configurations]
        if any(pending):  # no cluster start-up when every track is already extracted
            with dask_cluster(settings.compute) as scheduler:
                # a few shards per worker at a time (each holds a thread here and its files'
                # tasks in the scheduler); each keeps its own time limit while it waits on its
                # files (a task runs in a thread, where a Prefect timeout cannot interrupt the wait)
                with ThreadPoolTaskRunner(max_workers=stages.shards_in_flight(settings)) as shard_runner:
                    futures = [[shard_runner.submit(feature_tasks.extract, {"shard": s, "settings": c, "scheduler": scheduler,
                                                                            "priority": -i})
                                for i, s in enumerate(shards)]
                               for c, shards in zip(configurations, pending, strict=True)]
                    results = [[f.result() for f in submitted] for submitted in futures]
        main, *others = [limited(feature_tasks.finish, task_seconds(c))(c, r, time.perf_counter() - started)
                         for c, r in zip(configurations, results, strict=True)]
        # musicnn's input, when a selected candidate reads it: the same stage in its own configuration
        main["configurations"] = {c.features.config_hash(): o for c, o in zip(configurations[1:], others, strict=True)}
        return main
