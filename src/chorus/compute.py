"""Where Dask work runs, with one owner: a local cluster by default, any scheduler by address
(``compute`` settings only), and the process's clients, one per scheduler (``dask_client``,
``DASK_CLIENTS``). Every stage that fans out (features, labels, melody, the index's check) goes
through here; the process's allocator settings live here too."""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from chorus.config import ComputeSettings

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


def local_workers(settings: ComputeSettings) -> int:
    """How many workers a local cluster starts: ``workers``, else one per core."""
    return settings.workers or os.cpu_count() or 1


def client_open(client: Any) -> bool:
    """Whether a Dask client still has (or is reaching) its scheduler: one that lost it closes,
    and a future submitted to a closed client is never resolved."""
    return client.status in ("newly-created", "connecting", "running")


def security(settings: ComputeSettings) -> Any:
    """The client's TLS credentials: the ``compute.tls_*`` files when set, else Dask's
    configuration (the ``DASK_DISTRIBUTED__COMM__TLS__*`` variables the local services set)."""
    from distributed.security import Security

    if settings.tls_ca_file is None:
        return Security()
    return Security(tls_ca_file=str(settings.tls_ca_file), tls_client_cert=str(settings.tls_cert_file),
                    tls_client_key=str(settings.tls_key_file), require_encryption=True)


_LOCAL_SECURITY: dict[str, Any] = {}  # address of a local cluster -> the temporary credentials its clients present


@contextmanager
def dask_scheduler(settings: ComputeSettings) -> Iterator[str]:
    """Yield a scheduler address: ``settings.address`` as is, or a temporary local cluster of
    ``threads_per_worker``-threaded worker processes on 127.0.0.1, over TLS with a certificate
    made for it (``Security.temporary``): another local user cannot submit code to its workers,
    which run as this user, while it runs. Clients of this process get the certificate
    (``security``)."""
    if settings.address:
        yield settings.address
        return
    import dask
    from distributed import LocalCluster
    from distributed.security import Security

    credentials = Security.temporary()
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
        threads_per_worker=settings.threads_per_worker,
        processes=True,
        memory_limit=settings.worker_memory_limit,
        dashboard_address=None,
        host="127.0.0.1",
        protocol="tls://",
        security=credentials,
    ) as cluster:
        _LOCAL_SECURITY[cluster.scheduler_address] = credentials
        try:
            yield cluster.scheduler_address
        finally:
            _LOCAL_SECURITY.pop(cluster.scheduler_address, None)


def client_security(address: str, settings: ComputeSettings | None = None) -> Any:
    """What a client of ``address`` presents: the temporary credentials of a local cluster this
    process started (``dask_scheduler``), else ``security(settings)``."""
    return _LOCAL_SECURITY.get(address) or security(settings or ComputeSettings())


class DaskClients:
    """The process's Dask clients, one per scheduler address, shared by the threads that use it
    (a client costs a connection handshake; closing one per shard showed in the timings). Once a
    connection has failed, later callers fail at once instead of each waiting its timeout."""

    def __init__(self) -> None:
        self._clients: dict[str, Any] = {}
        self._unreachable: dict[str, BaseException] = {}
        self._lock = threading.Lock()

    def get(self, address: str, settings: ComputeSettings | None = None) -> Any:
        """The open client of ``address`` (connected on first use)."""
        from distributed import Client

        with self._lock:
            if address in self._unreachable:
                failed = self._unreachable[address]  # a new error for this caller, chained to the first
                raise OSError(f"{failed}") from failed
            client = self._clients.get(address)
            if client is None or not client_open(client):
                try:
                    client = self._clients[address] = Client(address, set_as_default=False,
                                                             security=client_security(address, settings))
                except OSError as exc:
                    self._unreachable[address] = exc
                    raise
            return client

    def close(self, address: str) -> None:
        """Close the client of ``address`` and forget a failed connection to it."""
        with self._lock:
            self._unreachable.pop(address, None)
            client = self._clients.pop(address, None)
        if client is not None:
            client.close()


DASK_CLIENTS = DaskClients()


@contextmanager
def dask_cluster(settings: ComputeSettings) -> Iterator[str]:
    """A scheduler (``dask_scheduler``) whose clients (``DASK_CLIENTS.get``) close with it."""
    with dask_scheduler(settings) as address:
        try:
            yield address
        finally:
            DASK_CLIENTS.close(address)


@contextmanager
def dask_client(settings: ComputeSettings) -> Iterator[Any]:
    """A client of the configured scheduler or of a local cluster started for the caller; both
    close on exit."""
    with dask_cluster(settings) as address:
        yield DASK_CLIENTS.get(address, settings)


def dask_batch_runner(client: Any) -> Any:
    """A voting BatchRunner over a Dask client: the graph and tag matrices are scattered to every
    worker once, then one Dask task per batch of targets."""

    def run(fn: Any, graph: Any, tags: Any, batches: list[Any], settings: Any) -> list[Any]:
        graph_f, tags_f = client.scatter([graph, tags], broadcast=True)
        n = len(batches)
        return client.gather(client.map(fn, [graph_f] * n, [tags_f] * n, batches, [settings] * n, pure=False))

    return run
