"""What every flow shares: its settings, the state lock, its run name, failure notice, artifacts."""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import Field

from chorus.config import ChorusSettings, load_settings, set_dotted
from chorus.errors import ConfigError
from chorus.io import append_jsonl
from chorus.outage import service_addresses, service_outage
from chorus.state import StateDir, state_lock

# The settings parameter every flow takes. Empty: the settings of the process running the flow
# (its CHORUS_* environment and the YAML file in CHORUS_CONFIG, e.g. what `chorus serve` was
# started with); what a caller fills in is laid over those.
SETTINGS_DESCRIPTION = ("chorus settings for this run, laid over those of the process running it (CHORUS_* "
                        "environment, CHORUS_CONFIG file). Leave empty to use them as they are.")
SettingsParameter = Field(None, description=SETTINGS_DESCRIPTION)

CONFIG_ENV = "CHORUS_CONFIG"


# Where a run reads, writes and sends work: a deployment run's caller (anyone who can reach the
# Prefect API) may not change these unless the server's orchestration.deployment_may_set allows it.
SERVER_ONLY = ("state_dir", "mlflow_tracking_uri", "prefect_api_url", "export_root", "compute.address",
               "ingest.allowed_schemes", "services", "orchestration", "promote.force", "promote.rules")
# Files and folders a run reads: in a deployment run, each must lie under one of the server's
# orchestration.import_roots (none: a caller may name no input path; the server's own settings may).
INPUT_PATHS = ("ingest.manifest", "ingest.social_dir", "ingest.split_files", "library.folder", "labels.synonyms_file",
               "demo.soundfont")


def resolve(settings: ChorusSettings | dict[str, Any] | None, changes: dict[str, Any] | None = None) -> ChorusSettings:
    """The run's settings: the process's, with what the caller set laid over them, then the flow's
    typed parameters as dotted keys (``{"demo.scale": 0.5}``; None changes nothing). In a
    deployment run, a caller's setting among ``SERVER_ONLY`` is refused (ConfigError)."""
    if isinstance(settings, ChorusSettings):
        given = settings.model_dump(mode="json", exclude_unset=True)
    else:
        given = copy.deepcopy(settings or {})  # set_dotted writes into nested sections
    for key, value in (changes or {}).items():
        if value is not None:
            set_dotted(given, key, value)
    config = os.environ.get(CONFIG_ENV) or None
    if _in_deployment_run():
        server = load_settings(config, {})
        refuse_server_only(given, server)
        confine_inputs(_input_paths(given, server), server)
    return load_settings(config, given)


def _input_paths(given: dict[str, Any], server: ChorusSettings) -> list[str]:
    """The input paths a caller's settings name (those equal to the server's own are not the caller's)."""
    current = dict(_dotted_items(server.model_dump(mode="json")))
    paths = [value for key, value in _dotted_items(given)
             if any(key == p or key.startswith(f"{p}.") for p in INPUT_PATHS) and value is not None and value != current.get(key)]
    tasks = given.get("tasks") or {}
    paths += [task["file"] for task in tasks.values() if isinstance(task, dict) and task.get("file")]
    return [str(p) for p in paths]


def confine_inputs(paths: list[str], server: ChorusSettings | None = None) -> None:
    """In a deployment run, refuse (ConfigError, naming the path and the rule) an input path that
    is not under one of the server's ``orchestration.import_roots``; its contents are never read."""
    if not paths or not _in_deployment_run():
        return
    server = server or load_settings(os.environ.get(CONFIG_ENV) or None, {})
    roots = [Path(r).expanduser().resolve() for r in server.orchestration.import_roots]
    for given in paths:
        path = Path(given).expanduser().resolve()
        if not any(path.is_relative_to(root) for root in roots):
            raise ConfigError(f"{given}: a deployment run reads only under the server's orchestration.import_roots "
                              f"({', '.join(map(str, roots)) or 'none set'})")


def _in_deployment_run() -> bool:
    from prefect.runtime import deployment

    return deployment.id is not None


def refuse_server_only(given: dict[str, Any], server: ChorusSettings) -> None:
    """Raises ConfigError for a caller's setting that only the server's settings may make."""
    allowed = set(server.orchestration.deployment_may_set)
    current = dict(_dotted_items(server.model_dump(mode="json")))
    refused = [key for key, value in _dotted_items(given)
               if any(key == s or key.startswith(f"{s}.") for s in SERVER_ONLY)
               and not any(key == a or key.startswith(f"{a}.") for a in allowed)
               and value != current.get(key)]
    if refused:
        raise ConfigError(f"settings {refused} are the server's to set, not a deployment run's parameters "
                          "(the server's orchestration.deployment_may_set can allow them)")


def _dotted_items(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        items.extend(_dotted_items(value, f"{dotted}.") if isinstance(value, dict) and value else [(dotted, value)])
    return items


@contextmanager
def holding_state(settings: ChorusSettings) -> Iterator[StateDir]:
    """The state directory, locked for the flow; a service that stopped answering in the flow is
    told as one line naming it and its address (ServiceUnavailableError)."""
    state = StateDir(settings.state_dir).create()
    with state_lock(state, settings.lock_timeout_s):
        try:
            yield state
        except Exception as exc:
            outage = service_outage(exc, service_addresses(settings))
            if outage is None or outage is exc:
                raise
            raise outage from exc


HEARTBEAT_ENV = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"


@contextmanager
def without_run_heartbeats() -> Iterator[None]:
    """Flow runs started inside skip Prefect's run heartbeats (unless PREFECT_FLOWS_HEARTBEAT_FREQUENCY
    is set). Heartbeats let a server that outlives a run detect that it crashed; their thread is
    joined when the run ends, which delays every flow and subflow (see docs/benchmarks.md)."""
    import prefect.context

    if os.environ.get(HEARTBEAT_ENV):
        yield
        return
    # prefect's temporary_settings rebuilds every setting from the environment on each call;
    # the quiet copy of the same base settings is made once
    context = prefect.context.get_settings_context()
    base, quiet = _QUIET_SETTINGS
    if base is not context.settings:
        quiet = context.settings.copy_with_update(updates={"flows.heartbeat_frequency": None})
        _QUIET_SETTINGS[:] = [context.settings, quiet]
    with prefect.context.SettingsContext(profile=context.profile, settings=quiet):
        yield


_QUIET_SETTINGS: list[Any] = [None, None]  # the base settings last seen, and their copy without heartbeats


@contextmanager
def local_run() -> Iterator[None]:
    """Around a flow called in this process: without heartbeats when it runs on the embedded,
    temporary Prefect API (no PREFECT_API_URL), which dies with the process anyway; with them
    against a server, where zombie-run detection can use them."""
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        yield
        return
    with without_run_heartbeats():
        yield


def run_name() -> str:
    """`<flow> <deployment or 'local'> <UTC time>`: what the Prefect UI lists runs by.

    Read from the run's own context: ``prefect.runtime.deployment.name`` would fetch the flow run
    from the API to learn that a local run has no deployment."""
    from prefect.context import FlowRunContext
    from prefect.runtime import deployment, flow_run

    context = FlowRunContext.get()
    run = context.flow_run if context is not None else None
    if run is None:  # not inside a flow run: what prefect.runtime can tell
        return f"{flow_run.flow_name} · {deployment.name or 'local'} · {datetime.now(timezone.utc):%Y-%m-%d %H:%M}"
    name = deployment.name if run.deployment_id else "local"
    when = run.expected_start_time or datetime.now(timezone.utc)
    return f"{context.flow.name} · {name} · {when:%Y-%m-%d %H:%M}"


def notify_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """on_failure hook: the log, a line in <state>/audit/failures.jsonl and, when configured,
    the Prefect notification block ``orchestration.notification_block``."""
    logger = logging.getLogger("chorus.failures")
    try:
        settings = resolve(flow_run.parameters.get("settings"))
    except Exception:  # the run's settings are the failure itself (refused, or do not load): the server's record it
        try:
            settings = resolve(None)
        except Exception as exc:
            logger.error("flow run %s failed and no settings load (%s)", flow_run.name, exc)
            return
    record = {"time": datetime.now(timezone.utc).isoformat(), "flow": flow.name, "flow_run": flow_run.name,
              "flow_run_id": str(flow_run.id), "deployment_id": str(flow_run.deployment_id or ""),
              "state": state.name, "message": state.message}
    path = StateDir(settings.state_dir).audit / "failures.jsonl"
    append_jsonl(path, record)
    logger.error("flow run %s (%s) failed: %s; recorded in %s", flow_run.name, flow.name, state.message, path)
    send_notification(settings, f"chorus: {flow_run.name} failed", json.dumps(record, indent=1))


def send_notification(settings: ChorusSettings, subject: str, body: str) -> bool:
    """Tell ``orchestration.notification_block`` (when set); whether it was told."""
    block = settings.orchestration.notification_block
    if not block:
        return False
    from prefect.blocks.core import Block

    try:
        Block.load(block).notify(body=body, subject=subject)
        return True
    except Exception as exc:  # a broken notifier must not hide what it reports
        logging.getLogger("chorus.failures").error("notification block %s failed: %s", block, exc)
        return False


FLOW_OPTIONS: dict[str, Any] = {"flow_run_name": run_name, "on_failure": [notify_failure], "log_prints": True}


def publish_artifacts(key: str, markdown: str, table: list[dict[str, Any]] | None = None) -> None:
    """A markdown artifact (and a table) on the current flow run, shown in the Prefect UI."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_markdown_artifact(markdown=markdown, key=key, description=markdown.splitlines()[0].lstrip("# "))
    if table:
        create_table_artifact(table=table, key=f"{key}-table")
