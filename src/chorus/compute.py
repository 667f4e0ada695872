"""Where Dask work runs: a local cluster by default, any scheduler by address (configuration only)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from chorus.config import FeatureSettings


@contextmanager
def dask_scheduler(settings: FeatureSettings) -> Iterator[str]:
    """Yield a scheduler address: ``settings.dask_address`` as is, or a temporary local cluster of
    single-threaded worker processes (librosa/numpy scale with processes, not threads, here)."""
    if settings.dask_address:
        yield settings.dask_address
        return
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=settings.dask_workers,
        threads_per_worker=1,
        processes=True,
        memory_limit=settings.worker_memory_limit,
        dashboard_address=None,
        host="127.0.0.1",
    ) as cluster:
        yield cluster.scheduler_address
