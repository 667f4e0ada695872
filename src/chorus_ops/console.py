"""What a chorus command shows: a live line per stage while it runs (a bar for shards or epochs,
its time), the full log in ``<state>/logs/``, and the closing summary. Third-party INFO lines and
known-harmless warnings go to the log file only; ``--verbose`` shows the log as it is written."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from chorus.state import StateDir

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# Loggers whose warnings a user acts on; anything else reaches the terminal only as an error.
OWN_LOGGERS = ("chorus", "prefect.flow_runs", "prefect.task_runs")
EPOCH = re.compile(r"^(?P<candidate>\S+) epoch (?P<epoch>\d+):")
SHARDS = re.compile(r"^(?P<shards>\d+) shards to extract")
FINISHED = re.compile(r"^Finished in state (?P<state>\w+)")


class ConsoleFilter(logging.Filter):
    """Lets through chorus's own warnings and every error; the rest stays in the log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        return record.levelno >= logging.WARNING and record.name.startswith(OWN_LOGGERS)


class StageLines(logging.Handler):
    """One progress line per flow (stage), fed by Prefect's flow-run and task-run records: shards
    extracted of those planned, the epoch a candidate is at, and the state each flow finished in."""

    def __init__(self, progress: Progress, epochs: int) -> None:
        super().__init__(logging.INFO)
        self.progress, self.epochs = progress, epochs
        self.rows: dict[str, TaskID] = {}

    def _row(self, flow: str) -> TaskID:
        if flow not in self.rows:
            self.rows[flow] = self.progress.add_task(flow, total=None)
        return self.rows[flow]

    def emit(self, record: logging.LogRecord) -> None:
        flow = getattr(record, "flow_name", None)
        if not flow or flow == "pipeline" or not record.name.startswith("prefect."):
            return
        row, message = self._row(flow), record.getMessage()
        finished = FINISHED.match(message)
        if record.name == "prefect.flow_runs" and finished:
            total = self.progress.tasks[row].total or 1
            self.progress.update(row, total=total, completed=total, description=f"{flow} [dim]{finished['state'].lower()}[/]")
            self.progress.stop_task(row)
        elif (planned := SHARDS.match(message)) is not None:
            self.progress.update(row, total=int(planned["shards"]), completed=0, description=f"{flow}: shards")
        elif getattr(record, "task_name", "") == "extract-shard" and message.startswith("shard "):
            self.progress.advance(row)
        elif (epoch := EPOCH.match(message)) is not None:
            self.progress.update(row, total=self.epochs, completed=int(epoch["epoch"]),
                                 description=f"{flow}: {epoch['candidate']} epochs")


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
def stage_lines(console: Console, epochs: int, enabled: bool) -> Iterator[None]:
    """A live line per stage while the block runs (a terminal only; a log or a pipe gets the summary)."""
    if not enabled or not console.is_terminal:
        yield
        return
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=False)
    lines = StageLines(progress, epochs)
    logging.getLogger("prefect").addHandler(lines)
    try:
        with progress:
            yield
    finally:
        logging.getLogger("prefect").removeHandler(lines)


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
