"""Where Dask work runs: a local cluster by default, any scheduler by address (configuration only)."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from chorus.config import FeatureSettings

# Dask's default MALLOC_TRIM_THRESHOLD_=65536 turns off glibc's adaptive mmap threshold, so every
# multi-MB spectrogram is a fresh mmap with page faults, which slows extraction. Large thresholds
# keep the adaptive heap reuse. BLAS/OpenMP stay at one thread: we scale by processes. Arrow
# allocates from the system allocator (see ``arrow_system_allocator``).
WORKER_ENVIRON = {
    "ARROW_DEFAULT_MEMORY_POOL": "system",
    "MALLOC_TRIM_THRESHOLD_": 128 * 2**20,
    "MALLOC_MMAP_THRESHOLD_": 32 * 2**20,  # glibc ignores more than 32 MiB
    "OMP_NUM_THREADS": 1,
    "MKL_NUM_THREADS": 1,
    "OPENBLAS_NUM_THREADS": 1,
}


def arrow_system_allocator() -> None:
    """Arrow's allocations in this process go to the system allocator from now on. Its default
    pool (mimalloc) keeps the pages each thread freed, so a process whose threads take turns
    with Arrow tables (a stage's shard tasks) grows with the number of tables it has handled.
    Child processes get the same through ARROW_DEFAULT_MEMORY_POOL (``runtime_environment``)."""
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())


M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4  # glibc's mallopt parameters (malloc.h)
PROCESS_HEAP = (("MALLOC_MMAP_MAX_", M_MMAP_MAX, 0), ("MALLOC_TRIM_THRESHOLD_", M_TRIM_THRESHOLD, 1024 * 2**20),
                ("MALLOC_TOP_PAD_", M_TOP_PAD, 64 * 2**20))


def tune_process_allocator() -> dict[str, int]:
    """This process's glibc heap for training and embedding, which free and allocate the same
    large tensors every step: every block from the heap, none from a fresh mmap (each of which
    the kernel faults in page by page, and unmaps again on free), up to 1 GiB of free heap kept
    instead of returned, and the heap grown 64 MiB at a time. A variable the user set (the
    MALLOC_*_ names of glibc's tunables) wins; without glibc, nothing changes. Returns what was
    set. docs/benchmarks.md, "Training", has the measurement."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return {}
    chosen = {}
    for variable, parameter, value in PROCESS_HEAP:
        if variable not in os.environ and mallopt(ctypes.c_int(parameter), ctypes.c_int(value)) == 1:
            chosen[variable] = value
    return chosen


def release_freed_memory() -> None:
    """Hand the heap pages this process has freed back to the system (glibc's ``malloc_trim``;
    a no-op elsewhere). glibc keeps pages freed between live allocations, so a stage that
    drops large inputs before its next step would otherwise carry their size to the end: the
    remedy Dask's documentation gives for "memory not released back to the OS". No garbage
    collection first: what a stage drops is freed by reference counting, and a full collection
    costs a quarter of a second in a process that has imported torch, Prefect and GX."""
    with suppress(OSError, AttributeError):  # the process's own symbols: libc's, where it is glibc
        ctypes.CDLL(None).malloc_trim(0)


def local_workers(settings: FeatureSettings) -> int:
    """How many workers a local cluster starts: ``dask_workers``, else one per core."""
    return settings.dask_workers or os.cpu_count() or 1


def client_open(client: Any) -> bool:
    """Whether a Dask client still has (or is reaching) its scheduler: one that lost it closes,
    and a future submitted to a closed client is never resolved."""
    return client.status in ("newly-created", "connecting", "running")


@contextmanager
def dask_scheduler(settings: FeatureSettings) -> Iterator[str]:
    """Yield a scheduler address: ``settings.dask_address`` as is, or a temporary local cluster of
    single-threaded worker processes (librosa/numpy scale with processes, not threads, here)."""
    if settings.dask_address:
        yield settings.dask_address
        return
    import dask
    from distributed import LocalCluster

    # A task whose worker dies fails at once (no silent rescheduling onto the next worker): the
    # features stage then tries each such file alone, so one poison file cannot kill them all.
    # Workers neither pause nor spill for memory: they hold a shard's results until it is written;
    # a paused worker holding them waits for ever, and spilling a long track's results copies them
    # while they are serialised, which is what pushes a worker over its limit. The limit stays.
    # A nanny restarts its own worker; the cluster would close a nanny whose worker (by name) is
    # missing 15 s after any earlier loss of it, which a later restart in progress then is.
    with dask.config.set({"distributed.nanny.pre-spawn-environ": WORKER_ENVIRON,
                          "distributed.deploy.lost-worker-timeout": "24h",
                          "distributed.scheduler.allowed-failures": 0,
                          "distributed.worker.memory.pause": False,
                          "distributed.worker.memory.target": False,
                          "distributed.worker.memory.spill": False}), LocalCluster(
        n_workers=local_workers(settings),
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
