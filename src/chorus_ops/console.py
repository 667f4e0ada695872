"""What a chorus command shows: a live line per stage while it runs (a bar for shards or epochs,
its time; plain lines when the output is not a terminal), fed by the stages' progress events, the
full log in ``<state>/logs/``, and the closing summary. Third-party INFO lines and
known-harmless warnings go to the log file only; ``--verbose`` shows the log as it is written."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from chorus.progress import ProgressEvent, listening
from chorus.state import StateDir

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# Loggers whose warnings a user acts on; anything else reaches the terminal only as an error.
OWN_LOGGERS = ("chorus", "prefect.flow_runs", "prefect.task_runs")


class ConsoleFilter(logging.Filter):
    """Lets through chorus's own warnings and every error; the rest stays in the log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        return record.levelno >= logging.WARNING and record.name.startswith(OWN_LOGGERS)


class StageBars:
    """A live bar per stage on a terminal, from the stages' progress events (chorus.progress):
    shards extracted of those planned, the epoch a candidate is at, and how each stage ended."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.rows: dict[str, TaskID] = {}
        self.done: dict[str, int] = {}

    def _row(self, stage: str) -> TaskID:
        if stage not in self.rows:
            self.rows[stage] = self.progress.add_task(stage, total=None)
        return self.rows[stage]

    def __call__(self, event: ProgressEvent) -> None:
        row = self._row(event.stage)
        if event.kind == "started" and event.total is not None:
            self.done[event.stage] = 0
            self.progress.update(row, total=event.total or 1, completed=0, description=f"{event.stage}: {event.unit}")
        elif event.kind == "advanced":
            done = event.done if event.done is not None else self.done.get(event.stage, 0) + event.step
            self.done[event.stage] = done
            label = f"{event.stage}: {event.detail} {event.unit}" if event.detail else f"{event.stage}: {event.unit}"
            self.progress.update(row, total=event.total or self.progress.tasks[row].total, completed=done, description=label)
        elif event.kind == "finished":
            total = self.progress.tasks[row].total or 1
            how = "current" if event.skipped else f"done in {event.seconds:.1f} s" if event.seconds is not None else "done"
            self.progress.update(row, total=total, completed=total, description=f"{event.stage} [dim]{how}[/]")
            self.progress.stop_task(row)


class StageLog:
    """One plain line per stage event where the output is not a terminal (cron, CI, a file):
    started, progress at every ``every`` share of the work, done (with its counts)."""

    def __init__(self, console: Console, every: float = 0.25) -> None:
        self.console, self.every = console, every
        self.done: dict[str, int] = {}
        self.totals: dict[str, int | None] = {}
        self.shown: dict[str, float] = {}

    def _line(self, text: str) -> None:
        self.console.print(f"{datetime.now():%H:%M:%S} {text}", highlight=False, soft_wrap=True)

    def __call__(self, event: ProgressEvent) -> None:
        stage = event.stage
        if event.kind == "started":
            self.done[stage], self.totals[stage], self.shown[stage] = 0, event.total, 0.0
            self._line(f"{stage} started" + (f" ({event.total} {event.unit})" if event.total is not None else ""))
        elif event.kind == "advanced":
            done = event.done if event.done is not None else self.done.get(stage, 0) + event.step
            self.done[stage] = done
            total = event.total or self.totals.get(stage)
            if total:
                share = min(done / total, 1.0)
                if share - self.shown.get(stage, 0.0) >= self.every or share == 1.0 and self.shown.get(stage) != 1.0:
                    self.shown[stage] = share
                    what = f" {event.detail}" if event.detail else ""
                    self._line(f"{stage} {share:.0%} ({done}/{total} {event.unit}{what})")
        else:
            how = "current, skipped" if event.skipped else f"done in {event.seconds:.1f} s" if event.seconds is not None else "done"
            self._line(f"{stage} {how}" + (f": {event.detail}" if event.detail else ""))


def log_file(state: StateDir, command: str) -> Path:
    state.logs.mkdir(parents=True, exist_ok=True)
    return state.logs / f"{command}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.log"


def named_loggers() -> list[logging.Logger]:
    """Every logger created so far (not the root, not placeholders)."""
    return [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]


def terminal_handlers() -> Iterator[logging.StreamHandler]:
    """The handlers that write to the terminal, on the root logger and every named one."""
    for logger in [logging.getLogger(), *named_loggers()]:
        for handler in logger.handlers:
            # every stream that is not a file (MLflow wraps stderr in a stream of its own)
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                yield handler


def route_logs(path: Path, verbose: bool) -> logging.Handler:
    """Every record at INFO and above to ``path``; the terminal's handlers keep only what
    ``ConsoleFilter`` lets through, unless ``verbose``. Python warnings become log records."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    for logger in named_loggers():
        if not logger.propagate and logger.handlers:
            logger.addHandler(handler)
    if not verbose:
        for terminal in terminal_handlers():
            if not any(isinstance(f, ConsoleFilter) for f in terminal.filters):
                terminal.addFilter(ConsoleFilter())
    return handler


@contextmanager
def stage_lines(console: Console, enabled: bool) -> Iterator[None]:
    """Progress while the block runs: a live bar per stage on a terminal, one plain line per stage
    event elsewhere (``enabled`` False: none, the log shows everything)."""
    if not enabled:
        yield
        return
    if not console.is_terminal:
        with listening(StageLog(console)):
            yield
        return
    bars = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)
    with bars, listening(StageBars(bars)):
        yield


def stage_summaries(summary: Any) -> list[dict[str, Any]]:
    """Stage summaries found in a flow's result (flows nest them: pipeline -> ingest -> demo)."""
    if isinstance(summary, dict) and "stage" in summary:
        return [summary]
    if isinstance(summary, dict):
        return [s for value in summary.values() for s in stage_summaries(value)]
    return []


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def stage_note(stage: dict[str, Any], width: int = 70) -> str:
    """A stage's work in one line: its scalar counts (a skipped stage: why, when it says)."""
    counts = stage.get("counts") or {}
    if stage["skipped"] and "reason" in counts:
        return str(counts["reason"])[:width]
    parts = [f"{k} {_short(v)}" for k, v in counts.items() if isinstance(v, int | float | str) and not isinstance(v, bool)]
    note = ", ".join(parts)
    return note if len(note) <= width else note[: width - 1] + "…"


def summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title="chorus", show_lines=False, title_justify="left")
    for column in ("stage", "work", "seconds", "counts"):
        table.add_column(column, overflow="fold")
    for stage in stage_summaries(summary):
        table.add_row(stage["stage"], "skipped (current)" if stage["skipped"] else "done", f"{stage['seconds']:.1f}",
                      stage_note(stage))
    return table
