"""Where Dask work runs: a local cluster by default, any scheduler by address (configuration only)."""

from __future__ import annotations

from collections.abc import Iterator
import os
from contextlib import contextmanager
from typing import Any

from chorus.config import FeatureSettings


# Dask's default MALLOC_TRIM_THRESHOLD_=65536 turns off glibc's adaptive mmap threshold, so every
# multi-MB spectrogram is a fresh mmap with page faults: measured 20-25% slower extraction. Large
# thresholds keep the adaptive heap reuse. BLAS/OpenMP stay at one thread: we scale by processes.
WORKER_ENVIRON = {
    "MALLOC_TRIM_THRESHOLD_": 128 * 2**20,
    "MALLOC_MMAP_THRESHOLD_": 64 * 2**20,
    "OMP_NUM_THREADS": 1,
    "MKL_NUM_THREADS": 1,
    "OPENBLAS_NUM_THREADS": 1,
}


@contextmanager
def dask_scheduler(settings: FeatureSettings) -> Iterator[str]:
    """Yield a scheduler address: ``settings.dask_address`` as is, or a temporary local cluster of
    single-threaded worker processes (librosa/numpy scale with processes, not threads, here)."""
    if settings.dask_address:
        yield settings.dask_address
        return
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.nanny.pre-spawn-environ": WORKER_ENVIRON}), LocalCluster(
        n_workers=settings.dask_workers or os.cpu_count() or 1,
        threads_per_worker=1,
        processes=True,
        memory_limit=settings.worker_memory_limit,
        dashboard_address=None,
        host="127.0.0.1",
    ) as cluster:
        yield cluster.scheduler_address


def dask_batch_runner(client: Any) -> Any:
    """A voting BatchRunner over a Dask client: the graph and tag matrices are scattered to every
    worker once, then one Dask task per batch of targets."""

    def run(fn: Any, graph: Any, tags: Any, batches: list[Any], settings: Any) -> list[Any]:
        graph_f, tags_f = client.scatter([graph, tags], broadcast=True)
        n = len(batches)
        return client.gather(client.map(fn, [graph_f] * n, [tags_f] * n, batches, [settings] * n, pure=False))

    return run


def stream_shard(shard: Any, files_dataset: str, settings: FeatureSettings) -> Any:
    """A Dask task that writes one shard while its files are extracted: it leaves the worker's
    thread pool (``worker_client`` secedes) and writes each file's rows as soon as that file is
    done, in the shard's order, fetching results held by other workers. When the last file is
    extracted, only its rows are left to write, not the whole shard.

    The file futures come as a published dataset, not as arguments: as arguments they would be
    dependencies (the writer would wait for all of them), and ``get_dataset`` is what registers
    them with the scheduler for this worker's client."""
    from distributed import worker_client

    from chorus.features import ShardWriter

    writer = ShardWriter(shard, settings)
    try:
        with worker_client() as client:
            for future in client.get_dataset(files_dataset):
                writer.add(future.result())
        return writer.close()
    except BaseException:
        writer.abort()
        raise
