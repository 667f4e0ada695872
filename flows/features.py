from __future__ import annotations

import time
from typing import Any

from prefect import flow

from chorus.compute import dask_scheduler
from chorus.config import ChorusSettings
from chorus.features import shard_is_current
from flows._common import holding_state, resolve
from tasks import features as feature_tasks


@flow(name="features", log_prints=True)
def features(settings: ChorusSettings | None = None) -> dict[str, Any]:
    """Log-mel segments for every track: one task per shard, Dask inside, Parquet out."""
    settings = resolve(settings)
    with holding_state(settings):
        started = time.perf_counter()
        shards = feature_tasks.plan(settings)
        current = {s.key for s in shards if shard_is_current(s)}
        pending = [s for s in shards if s.key not in current]
        results = [{"shard": s.path.name, "skipped": True, "tracks": len(s.tracks)} for s in shards if s.key in current]
        if pending:  # no cluster start-up when every shard is current
            with dask_scheduler(settings.features) as scheduler:
                futures = [feature_tasks.extract.submit(s, settings, scheduler) for s in pending]
                results += [f.result() for f in futures]
        return feature_tasks.finish(settings, shards, results, time.perf_counter() - started)

