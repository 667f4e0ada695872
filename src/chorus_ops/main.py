"""The ``chorus`` entry point around the command tree of ``chorus_ops.cli``: global options
accepted after the command, interrupts, and the documented exit statuses (docs/cli.md):
0 ok, 1 unexpected, 2 usage, 3 bad input or settings, 4 service outage, 5 drift alarm or files
refused with --strict, 130 interrupted. A crashed or cancelled flow is never 0."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from typing import Any

import typer

from chorus.errors import ChorusError, ServiceUnavailableError
from chorus_ops.cli import app
from chorus_ops.session import (
    CTX,
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OUTAGE,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
    err,
)


def _outage(exc: BaseException) -> ServiceUnavailableError | None:
    from chorus.outage import service_addresses, service_outage

    try:
        return service_outage(exc, service_addresses(CTX.settings()))
    except Exception:  # the settings themselves are what failed
        return None


def _exit_now(code: int) -> None:
    """Exit without waiting for Prefect's background services: with its server gone they would
    send each queued event and log to it in turn, minutes of connection attempts. The log files
    are flushed first; what is committed is on disk. The processes this one started (the temporary
    Prefect API, a local Dask cluster, render workers) are stopped first: none outlives the command."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.flush()
    _stop_children()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _stop_children(grace_s: float = 3.0) -> None:
    """Terminate every process this one started (and theirs), then kill those still there."""
    import psutil

    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=grace_s)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()


GLOBAL_VALUED = ("--config", "-c", "--state-dir", "--set", "-s", "--lock-timeout")
GLOBAL_FLAGS = ("--verbose", "-v", "--debug")


def _subtree_options(command: Any) -> set[str]:
    """Every option string a command (and, for a group, its subcommands) defines."""
    found = {o for param in command.params for o in (*param.opts, *param.secondary_opts)}
    for sub in getattr(command, "commands", {}).values():
        found |= _subtree_options(sub)
    return found


def global_options_first(argv: list[str], root: Any) -> list[str]:
    """``argv`` with the global options given after the command moved before it (``chorus run
    --set a=b`` as ``chorus --set a=b run``); an option the command defines itself stays."""
    names = set(root.commands)
    at = next((i for i, a in enumerate(argv) if a in names and (i == 0 or argv[i - 1] not in GLOBAL_VALUED)), None)
    if at is None:
        return argv
    own = _subtree_options(root.commands[argv[at]])
    head, tail, moved = argv[:at + 1], argv[at + 1:], []
    rest, i = [], 0
    while i < len(tail):
        token = tail[i]
        if token == "--":
            rest += tail[i:]
            break
        name = token.split("=", 1)[0]
        if name in GLOBAL_VALUED and name not in own:
            takes_next = "=" not in token and i + 1 < len(tail)
            moved += tail[i:i + 1 + takes_next]
            i += 1 + takes_next
            continue
        if token in GLOBAL_FLAGS and token not in own:
            moved.append(token)
        else:
            rest.append(token)
        i += 1
    return [*head[:-1], *moved, head[-1], *rest]


def exit_status(exc: BaseException) -> int:
    """The documented exit status of an error (docs/cli.md)."""
    if isinstance(exc, KeyboardInterrupt | typer.Abort):
        return EXIT_INTERRUPTED
    if isinstance(exc, ServiceUnavailableError):
        return EXIT_OUTAGE
    if isinstance(exc, ChorusError):
        return EXIT_INPUT
    if isinstance(exc, typer.TyperException):  # usage errors (typer's own click)
        return EXIT_USAGE
    return EXIT_OUTAGE if _outage(exc) is not None else EXIT_UNEXPECTED


INTERRUPT_GRACE_S = 10.0  # after a first SIGINT/SIGTERM, how long the run may take to wind down


def _interrupted() -> None:
    err.print("[red]interrupted[/]: what the run committed is on disk; run it again to go on", highlight=False)
    _exit_now(EXIT_INTERRUPTED)


def _on_interrupt(signum: int, frame: Any) -> None:
    """First SIGINT/SIGTERM: stop the run (KeyboardInterrupt in the main thread; Prefect marks the
    runs Crashed) and exit 130 within INTERRUPT_GRACE_S; a second one: exit 130 now."""
    if CTX.interrupted:
        _interrupted()
    CTX.interrupted = True
    timer = threading.Timer(INTERRUPT_GRACE_S, _interrupted)
    timer.daemon = True
    timer.start()
    raise KeyboardInterrupt


def main() -> None:
    """Entry point: runs the command; an error prints one line on stderr and exits with its status
    (0 ok, 1 unexpected, 2 usage, 3 bad input or settings, 4 service outage, 5 drift alarm or files
    refused with --strict, 130 interrupted)."""
    debug = "--debug" in sys.argv
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _on_interrupt)
    argv = global_options_first(sys.argv[1:], typer.main.get_command(app))
    try:
        code = app(args=argv, prog_name="chorus", standalone_mode=False)
    except typer.TyperException as exc:  # a usage error: typer's click prints it with the usage line
        if hasattr(exc, "show"):
            exc.show()
        else:
            err.print(f"[red]error:[/] {exc}", highlight=False)
        sys.exit(EXIT_USAGE)
    except (KeyboardInterrupt, typer.Abort):
        _interrupted()
    except Exception as exc:
        if CTX.interrupted:  # whatever the interrupt left behind (e.g. the temporary API gone)
            _interrupted()
        if debug:
            raise
        status = exit_status(exc)
        outage = exc if isinstance(exc, ServiceUnavailableError) else _outage(exc) if status == EXIT_OUTAGE else None
        if outage is not None:  # a service went away (also where the flow could not tell it: the Prefect server)
            err.print(f"[red]error:[/] {outage}", highlight=False, soft_wrap=True)
            if outage.service == "Prefect server":
                _exit_now(status)
        elif isinstance(exc, ChorusError):
            err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        else:
            err.print(f"[red]error:[/] {type(exc).__name__}: {exc} (run with --debug for the traceback)", soft_wrap=True)
        sys.exit(status)
    if CTX.interrupted:
        _interrupted()
    sys.exit(code if isinstance(code, int) else EXIT_OK)
