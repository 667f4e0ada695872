"""Peak resident memory of a benchmark's process and of the processes it starts."""

from __future__ import annotations

import threading

import psutil


class PeakMemory:
    """The peak resident memory (MiB) of this process and of the busiest worker process it started
    (Dask's, or ingest's), sampled every 0.1 s; ``mark()`` returns both peaks since the last mark
    and starts again."""

    def __init__(self) -> None:
        self._flow = self._worker = 0.0
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._done.wait(0.1):
            worker = 0.0
            for child in me.children(recursive=True):
                try:
                    if not any("uvicorn" in part for part in child.cmdline()):  # Prefect's temporary API is no worker
                        worker = max(worker, child.memory_info().rss / 2**20)
                except psutil.Error:
                    pass
            with self._lock:
                self._flow = max(self._flow, me.memory_info().rss / 2**20)
                self._worker = max(self._worker, worker)

    def mark(self) -> tuple[float, float]:
        with self._lock:
            peaks = (self._flow, self._worker)
            self._flow = self._worker = 0.0
        return peaks

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
