"""What every command shares: the options given before it, the consoles, and running a flow with
the log routed to ``<state>/logs/`` and a live line per stage."""

from __future__ import annotations

import importlib
import json
import logging
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from chorus.config import ChorusSettings, load_settings
from chorus.io import json_plain, write_json_atomic
from chorus.state import StateDir, apply_runtime_environment
from chorus_ops.console import log_file, route_logs, stage_lines, terminal_handlers

console = Console(stderr=False)
err = Console(stderr=True)

# Exit statuses (docs/cli.md): a crashed or cancelled flow is never 0.
EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, EXIT_INPUT, EXIT_OUTAGE, EXIT_REFUSED, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 5, 130
EXIT_ALARM = EXIT_REFUSED  # a drift alarm: the data is not what the champion was trained on

JsonFlag = Annotated[bool, typer.Option("--json", help="One JSON document on stdout instead of tables (logs on stderr).")]


def _without_nan(value: Any) -> Any:
    """NaN (pandas' missing value) as null: strict JSON readers (jq, JavaScript) refuse NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _without_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nan(v) for v in value]
    return value


def emit_json(document: Any) -> None:
    """The command's one JSON document on stdout (numpy values as numbers and lists; what JSON
    cannot hold, as its str)."""
    sys.stdout.write(json.dumps(_without_nan(json_plain(document)), allow_nan=False) + "\n")
    sys.stdout.flush()


class Session:
    """The options of this invocation (config file, overrides, task, flags) and its settings."""

    def __init__(self) -> None:
        self.config: Path | None = None
        self.overrides: dict[str, Any] = {}
        self.debug = False
        self.verbose = False
        self.task: str | None = None
        self.log: Path | None = None
        self.interrupted = False  # SIGINT or SIGTERM arrived (chorus_ops.main)

    def settings(self) -> ChorusSettings:
        settings = load_settings(self.config, self.overrides)
        if self.task:
            settings = settings.for_task(self.task)
        apply_runtime_environment(StateDir(settings.state_dir), prefect_api_url=settings.prefect_api_url)
        return settings

    def route_logs(self, settings: ChorusSettings, command: str) -> Path:
        """This command's log file; the terminal keeps warnings and errors unless --verbose."""
        self.log = log_file(StateDir(settings.state_dir), command)
        route_logs(self.log, self.verbose)
        if not self.debug:
            terminal_logs_without_tracebacks()
        return self.log


CTX = Session()


class FlowNotCompleted(RuntimeError):
    """A flow that ended Crashed or Cancelled without an error of its own to raise."""


def run_flow(name: str, flow_name: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """Run a flow of ``chorus_flows.<name>`` in this process; its result is also written as JSON
    beside the command's log (every stage's outputs, in full)."""
    settings = CTX.settings()
    # Prefect reads PREFECT_HOME at import: the flows load after the environment is set.
    module = importlib.import_module(f"chorus_flows.{name}")
    common = importlib.import_module("chorus_flows")
    path = CTX.route_logs(settings, flow_name or name)
    with common.local_run(), stage_lines(err, enabled=not CTX.verbose):
        flow = getattr(module, flow_name or name).with_options(timeout_seconds=settings.orchestration.flow_timeout_s)
        state = flow(settings=settings, return_state=True, **kwargs)
        if CTX.interrupted:
            raise KeyboardInterrupt
        # a failed flow raises its error here; a crashed or cancelled one is never a success
        result: dict[str, Any] = state.result(raise_on_failure=True)
        if not state.is_completed():
            raise FlowNotCompleted(f"flow {flow.name} ended {state.name}: {state.message or 'no message'}")
    write_json_atomic(path.with_suffix(".json"), result)  # what JSON cannot hold is written as its str
    return result


class WithoutTraceback(logging.Formatter):
    """Formats a copy of the record without its traceback; the record itself (which Prefect's
    API handler also sends to the server and UI) keeps it."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        copy = logging.makeLogRecord(record.__dict__)
        copy.exc_info, copy.exc_text, copy.stack_info = None, None, None
        return self.inner.format(copy)


def terminal_logs_without_tracebacks() -> None:
    """Terminal log lines stay one line each unless --debug; tracebacks still reach Prefect's API
    and the log file."""
    for handler in terminal_handlers():
        if not isinstance(handler.formatter, WithoutTraceback):
            handler.setFormatter(WithoutTraceback(handler.formatter))
