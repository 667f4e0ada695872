"""``chorus serve`` and ``chorus services up|down|status``: the deployments served from this
process, and the local services (Prefect server, MLflow on PostgreSQL, Dask, chorus serve)."""

from __future__ import annotations

import os
from typing import Annotated

import typer
import yaml
from rich.table import Table

from chorus.config import load_settings
from chorus.errors import ChorusError
from chorus.io import write_text_atomic
from chorus.state import StateDir
from chorus_ops.deployments import deployment_names
from chorus_ops.services import LocalServices
from chorus_ops.session import CTX, JsonFlag, console, emit_json, err


def serve() -> None:
    """Serve the deployments (nightly refresh, weekly retrain, every stage on demand) from this
    process: schedules and UI-triggered runs of the Prefect server at prefect_api_url run here."""
    settings = CTX.settings()
    if not os.environ.get("PREFECT_API_URL"):
        raise ChorusError("chorus serve needs a Prefect server: start the local services (make services-up) "
                          "or set prefect_api_url (CHORUS_PREFECT_API_URL) / PREFECT_API_URL")
    # Flow runs started here resolve their settings from this process: hand them these (flags included).
    served = StateDir(settings.state_dir).root / "services" / "serve-settings.yaml"
    write_text_atomic(served, yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False))
    os.environ["CHORUS_CONFIG"] = str(served)
    # the deployments import the flows, and Prefect reads PREFECT_HOME at import: after the environment
    from chorus_ops.deployments import serve as serve_deployments

    serve_deployments(settings)


services_app = typer.Typer(help="The local services: Prefect server, MLflow on PostgreSQL, Dask, chorus serve.",
                           no_args_is_help=True)


def _local_services() -> LocalServices:
    settings = load_settings(CTX.config, CTX.overrides)  # not CTX.settings(): no PREFECT_API_URL of its own
    return LocalServices(settings, deployments=deployment_names(settings))


@services_app.command("up")
def services_up() -> None:
    """Start what is not running (each health-checked), then print the environment that points chorus at them."""
    services = _local_services()
    _print_environment(services, services.up(log=err.print))


def _print_environment(services: LocalServices, env: dict[str, str]) -> None:
    console.print(f"[bold]Prefect UI[/]: {services.endpoints.prefect_ui_url} (log in with PREFECT_API_AUTH_STRING)")
    console.print(f"[bold]MLflow UI[/]: {services.endpoints.mlflow_url} (user {env['MLFLOW_TRACKING_USERNAME']}, "
                  "password MLFLOW_TRACKING_PASSWORD)")
    console.print(f"[bold]Dask scheduler[/]: {services.endpoints.dask_address} (TLS, the certificate in DASK_*)")
    console.print(f"[bold]Environment[/] (source {services.env_file}; secrets only there, mode 0600):")
    for key, value in env.items():
        shown = "<secret>" if any(word in key for word in ("PASSWORD", "AUTH_STRING")) else value
        console.print(f"  export {key}={shown}", highlight=False, soft_wrap=True)


@services_app.command("rotate")
def services_rotate() -> None:
    """New credentials for every running service (PostgreSQL and MLflow passwords, the Prefect
    auth string, Dask's certificates); Prefect, Dask and chorus serve restart on them."""
    services = _local_services()
    _print_environment(services, services.rotate(log=err.print))


@services_app.command("down")
def services_down(
    names: Annotated[list[str] | None, typer.Argument(help="Only these services (e.g. serve); default: all.")] = None,
) -> None:
    """Stop the services: chorus serve and the Dask workers first, PostgreSQL last."""
    _local_services().down(log=err.print, names=names or None)


@services_app.command("status")
def services_status(as_json: JsonFlag = False) -> None:
    """Each service's pid, whether it runs and passes its health check, and its address."""
    status = _local_services().status()
    if as_json:
        emit_json(status)
        return
    table = Table(title="services")
    for column in ("service", "pid", "running", "healthy", "address"):
        table.add_column(column, overflow="fold")
    for name, row in status.items():
        table.add_row(name, str(row.get("pid") or ""), str(row["running"]), str(row.get("healthy", row["running"])),
                      str(row["url"]))
    console.print(table)
