"""Progress as events: stages say when they start, how far they are (shards, files, epochs) and
when they finish; whoever shows progress subscribes (the terminal's lines and bars, a Prefect
task's log). One progress system, no parsing of log text.

Examples
--------
>>> seen = []
>>> with listening(seen.append):
...     report(ProgressEvent("features", "advanced", done=1, total=4, unit="shards"))
>>> seen[0].share
0.25
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger("chorus.progress")

Kind = Literal["started", "advanced", "finished"]


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a stage: ``started`` (with the ``total`` of ``unit`` when known); ``advanced``
    to ``done`` of ``total`` ``unit`` (shards, files, epochs; ``detail`` names what, e.g. the
    candidate), or by ``step`` units; ``finished`` (``detail``: what it did, ``seconds``,
    ``skipped`` when its output was current)."""

    stage: str
    kind: Kind
    done: int | None = None
    total: int | None = None
    unit: str = ""
    detail: str = ""
    seconds: float | None = None
    skipped: bool = False
    step: int = 0  # an advance by this many units where the reporter does not know ``done`` (a shard of many)

    @property
    def share(self) -> float | None:
        """How much of the stage is done, 0..1 (None when the total is unknown)."""
        if self.done is None or not self.total:
            return None
        return min(self.done / self.total, 1.0)


Listener = Callable[[ProgressEvent], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Receive every event reported in this process while the block runs (from any thread)."""
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)


def report(event: ProgressEvent) -> None:
    """Tell every listener; a listener that fails is logged and never fails the stage."""
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(event)
        except Exception:
            log.exception("a progress listener failed on %s", event)


def started(stage: str, total: int | None = None, unit: str = "") -> None:
    report(ProgressEvent(stage, "started", 0 if total is not None else None, total, unit))


def advanced(stage: str, done: int, total: int | None, unit: str, detail: str = "") -> None:
    report(ProgressEvent(stage, "advanced", done, total, unit, detail))


def finished(stage: str, detail: str = "", seconds: float | None = None, skipped: bool = False) -> None:
    report(ProgressEvent(stage, "finished", detail=detail, seconds=seconds, skipped=skipped))
