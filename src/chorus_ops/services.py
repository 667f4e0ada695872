"""The local services a team runs chorus against, as real processes (infra/local, `make services-up`).

PostgreSQL (a cluster under <state>/services/postgres, run as the postgres user when we are
root: PostgreSQL refuses root), an MLflow tracking server on it with a local artifact root, a
Prefect server with its UI, a Dask scheduler with workers and, optionally, `chorus serve` (the
deployments). Each is started only when it is not already healthy, must pass a health check
before `up` returns, and leaves its pid and log under <state>/services/. `down` stops them in
the reverse order: the deployments and the workers before the servers they talk to.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from chorus.compute import WORKER_ENVIRON
from chorus.config import ChorusSettings, ServicesSettings
from chorus.errors import ChorusError
from chorus.io import write_text_atomic
from chorus.state import TELEMETRY_OFF, StateDir

# What `chorus serve` (chorus_ops.deployments) serves: the services wait for these to register.
DEPLOYMENT_NAMES = frozenset({"nightly-refresh", "weekly-retrain", "on-demand"})


def shell_exports(env: dict[str, str]) -> str:
    """``export NAME=value`` lines that a shell sources without running anything in a value (a state
    path with ``$(...)`` or a quote in it stays a string)."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())


class ServiceError(ChorusError):
    """A service did not start, or its health check failed; the message names its log."""


@dataclass(frozen=True)
class Endpoints:
    """Where the services listen, and the environment that points chorus at them."""

    settings: ServicesSettings
    postgres_root: Path

    @property
    def prefect_api_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.prefect_port}/api"

    @property
    def prefect_ui_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.prefect_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.mlflow_port}"

    @property
    def postgres_uri(self) -> str:
        return f"postgresql+psycopg2://postgres@{self.settings.host}:{self.settings.postgres_port}/mlflow"

    @property
    def dask_address(self) -> str:
        return f"tcp://{self.settings.host}:{self.settings.dask_port}"

    def chorus_environment(self) -> dict[str, str]:
        """CHORUS_* variables (names from the settings model) that send every run to these services."""
        return {
            settings_env_name("prefect_api_url"): self.prefect_api_url,
            settings_env_name("mlflow_tracking_uri"): self.mlflow_url,
            settings_env_name("features", "dask_address"): self.dask_address,
        }


def settings_env_name(*path: str) -> str:
    """The environment variable that sets a (nested) setting, e.g. CHORUS_FEATURES__DASK_ADDRESS."""
    config = ChorusSettings.model_config
    prefix, delimiter = config.get("env_prefix") or "", config.get("env_nested_delimiter") or "__"
    return (prefix + delimiter.join(path)).upper()


def settings_env_names() -> set[str]:
    """Every environment variable the settings model reads (sections and their fields)."""
    from pydantic import BaseModel

    names: set[str] = set()

    def walk(model: type[BaseModel], path: tuple[str, ...]) -> None:
        for name, info in model.model_fields.items():
            names.add(settings_env_name(*path, name))
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, (*path, name))

    walk(ChorusSettings, ())
    return names


@dataclass
class Service:
    """One managed process: how to start it and how to know it is ready."""

    name: str
    argv: list[str]
    healthy: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    url: str = ""
    wave: int = 0  # services of one wave start together; a wave waits for the one before to be healthy


def _http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return bool(200 <= response.status < 300)
        except OSError:
            return False

    return check


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of this process counts as gone
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def postgres_bin() -> Path:
    """Debian's PostgreSQL binaries (/usr/lib/postgresql/<version>/bin), newest version first."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name)
                        if p.parent.parent.name.isdigit() else 0, reverse=True)
    if not candidates:
        raise ServiceError("PostgreSQL is not installed (no /usr/lib/postgresql/<version>/bin/pg_ctl): "
                           "run infra/local/install-system-packages.sh --services")
    return candidates[0].parent


class LocalServices:
    """Start, check and stop the local services of one state directory."""

    def __init__(self, settings: ChorusSettings, deployments: frozenset[str] = frozenset()) -> None:
        """``deployments``: the names `chorus serve` registers (its health check waits for them)."""
        self.settings = settings.services
        self.deployments = deployments
        self.state = StateDir(settings.state_dir)
        self.root = self.state.root / "services"
        self.endpoints = Endpoints(self.settings, self.root / "postgres")
        self.chorus_settings = settings

    # -- paths
    def pid_file(self, name: str) -> Path:
        return self.root / "run" / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    @property
    def settings_file(self) -> Path:
        """The settings the services were started with, handed to `chorus serve` (its flow runs use them)."""
        return self.root / "settings.yaml"

    @property
    def env_file(self) -> Path:
        """`source` it to point a shell's chorus commands (and prefect/mlflow CLIs) at the services."""
        return self.root / "chorus.env"

    def client_environment(self) -> dict[str, str]:
        """What points a process at these services: chorus's settings (this state directory
        included) and the Prefect and MLflow CLIs' own variables. `chorus serve` runs with it;
        chorus.env exports it."""
        return {**self.endpoints.chorus_environment(), settings_env_name("state_dir"): str(self.state.root),
                "PREFECT_API_URL": self.endpoints.prefect_api_url, "MLFLOW_TRACKING_URI": self.endpoints.mlflow_url}

    # -- the services, in start order
    def services(self) -> list[Service]:
        s, e = self.settings, self.endpoints
        bin_dir = Path(sys.executable).parent
        quiet = {**TELEMETRY_OFF, "PYTHONUNBUFFERED": "1"}
        prefect_env = {**quiet, "PREFECT_HOME": str(self.root / "prefect"), "PREFECT_UI_ENABLED": "true",
                       "PREFECT_SERVER_UI_ENABLED": "true", "PREFECT_API_URL": e.prefect_api_url,
                       "PREFECT_SERVER_API_HOST": s.host, "PREFECT_SERVER_API_PORT": str(s.prefect_port)}
        worker_env = {**quiet, **{k: str(v) for k, v in WORKER_ENVIRON.items()}}  # as the local cluster's workers
        dashboard = ["--dashboard-address", f"{s.host}:{s.dask_dashboard_port}"] if s.dask_dashboard_port else ["--no-dashboard"]
        out = [
            Service("mlflow", [str(bin_dir / "mlflow"), "server", "--backend-store-uri", e.postgres_uri,
                               "--artifacts-destination", (self.root / "mlartifacts").as_uri(), "--serve-artifacts",
                               "--host", s.host, "--port", str(s.mlflow_port), "--workers", "1"],
                    _http_ok(f"{e.mlflow_url}/health"), quiet, e.mlflow_url),
            Service("prefect-server", [str(bin_dir / "prefect"), "server", "start", "--host", s.host,
                                       "--port", str(s.prefect_port)],
                    _http_ok(f"{e.prefect_api_url}/health"), prefect_env, e.prefect_ui_url),
            Service("dask-scheduler", [str(bin_dir / "dask"), "scheduler", "--host", s.host, "--port", str(s.dask_port),
                                       *dashboard],
                    lambda: _port_open(s.host, s.dask_port), worker_env, e.dask_address),
        ]
        for n in range(s.dask_workers):
            out.append(Service(f"dask-worker-{n}", [str(bin_dir / "dask"), "worker", e.dask_address, "--nthreads", "1",
                                                    "--memory-limit", s.dask_worker_memory, "--name", f"local-{n}",
                                                    "--host", s.host, "--no-dashboard"],
                               self._worker_registered(f"local-{n}"), worker_env, e.dask_address, wave=1))
        if s.serve:
            serve_env = {**quiet, **self.client_environment(), "PREFECT_HOME": str(self.root / "prefect-client"),
                         # a scheduled run waits for a UI-triggered one holding the state, and vice versa,
                         # for a bounded time: then it fails (audited) and the next run proceeds
                         settings_env_name("lock_timeout_s"): str(self.chorus_settings.orchestration.served_lock_timeout_s)}
            out.append(Service("serve", [str(bin_dir / "chorus"), "--config", str(self.settings_file), "serve"],
                               self._deployments_served(), serve_env,
                               f"{e.prefect_ui_url}/deployments", wave=2))
        return out

    def _worker_registered(self, name: str) -> Callable[[], bool]:
        def check() -> bool:
            try:
                from distributed import Client

                with Client(self.endpoints.dask_address, timeout=3, set_as_default=False) as client:
                    workers = client.scheduler_info(n_workers=-1)["workers"].values()
                    return any(w.get("name") == name for w in workers)
            except OSError:
                return False
        return check

    def _deployments_served(self) -> Callable[[], bool]:
        """Ready when the serve process has registered its deployments with the Prefect server."""

        def check() -> bool:
            request = urllib.request.Request(f"{self.endpoints.prefect_api_url}/deployments/filter", data=b"{}",
                                             headers={"Content-Type": "application/json"}, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    names = {d["name"] for d in json.loads(response.read())}
                    return bool(names) and self.deployments <= names
            except (OSError, ValueError):  # URLError is an OSError
                return False
        return check

    # -- lifecycle
    def up(self, log: Callable[[str], None] = print) -> dict[str, str]:
        """Start what is not running, wait for each health check, write chorus.env; returns it."""
        for folder in ("run", "logs", "mlartifacts", "prefect", "prefect-client"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        self._postgres_up(log)
        write_text_atomic(self.settings_file, yaml.safe_dump(self.chorus_settings.model_dump(mode="json"), sort_keys=False))
        services = self.services()
        for wave in sorted({s.wave for s in services}):
            started: list[tuple[Service, subprocess.Popen[bytes]]] = []
            for service in (s for s in services if s.wave == wave):
                pid = self._pid(service.name)
                if pid and _alive(pid) and service.healthy():
                    log(f"{service.name}: already running (pid {pid})")
                else:
                    started.append((service, self._launch(service)))
            for service, process in started:  # started together (the servers' start-ups overlap)
                self._wait_healthy(service, process, log)
        env = self.client_environment()
        write_text_atomic(self.env_file, shell_exports(env))  # 0600, like every atomic write
        return env

    def _launch(self, service: Service) -> subprocess.Popen[bytes]:
        with self.log_file(service.name).open("ab") as logfile:
            process = subprocess.Popen(service.argv, stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env={**os.environ, **service.env}, cwd=self.state.root,
                                       start_new_session=True)  # its own process group: down stops its children too
        self.pid_file(service.name).write_text(str(process.pid))
        return process

    def _wait_healthy(self, service: Service, process: subprocess.Popen[bytes], log: Callable[[str], None]) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        while not service.healthy():
            if process.poll() is not None:
                raise ServiceError(f"{service.name} exited with code {process.returncode} while starting; "
                                   f"see {self.log_file(service.name)}:\n{self._tail(service.name)}")
            if time.monotonic() > deadline:
                raise ServiceError(f"{service.name} failed its health check within {self.settings.startup_timeout_s:.0f} s; "
                                   f"see {self.log_file(service.name)}:\n{self._tail(service.name)}")
            time.sleep(0.5)
        log(f"{service.name}: up (pid {process.pid}) {service.url}")

    def down(self, log: Callable[[str], None] = print, names: list[str] | None = None) -> None:
        """Stop everything (or the named services), last started first; PostgreSQL last (MLflow
        holds connections to it)."""
        known = [service.name for service in self.services()] + ["postgres"]
        unknown = set(names or []) - set(known)
        if unknown:
            raise ServiceError(f"unknown service(s) {', '.join(sorted(unknown))}; services: {', '.join(known)}")
        services = [s for s in reversed(self.services()) if names is None or s.name in names]
        for wave in sorted({s.wave for s in services}, reverse=True):
            self._stop([s.name for s in services if s.wave == wave], log)
        if names is None or "postgres" in names:
            self._postgres_down(log)

    def _stop(self, names: list[str], log: Callable[[str], None], grace_s: float = 20.0) -> None:
        """SIGTERM to each service's process group together, SIGKILL to what is left after ``grace_s``."""
        pids = {name: pid for name in names if (pid := self._pid(name))}
        for pid in pids.values():
            if _alive(pid):
                try:
                    os.killpg(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace_s
        while any(_alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.2)
        for name, pid in pids.items():
            if _alive(pid):
                log(f"{name}: killed after {grace_s:.0f} s")
            # children left in the group (uvicorn workers, a nanny's worker) go with it
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.pid_file(name).unlink(missing_ok=True)
            log(f"{name}: stopped")

    def status(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        pg = self._pg_ctl("status", check=False)
        out["postgres"] = {"running": pg.returncode == 0, "url": f"{self.settings.host}:{self.settings.postgres_port}"}
        for service in self.services():
            pid = self._pid(service.name)
            running = bool(pid and _alive(pid))
            out[service.name] = {"pid": pid, "running": running, "healthy": running and service.healthy(), "url": service.url}
        return out

    def _pid(self, name: str) -> int | None:
        path = self.pid_file(name)
        try:
            return int(path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _tail(self, name: str, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file(name).read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    # -- PostgreSQL: pg_ctl manages its own pid file
    def _as_postgres(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        data = self.endpoints.postgres_root / "data"
        if not data.exists():
            return subprocess.CompletedProcess(args, 3, "", "no cluster")
        done = subprocess.run(self._as_postgres([str(postgres_bin() / "pg_ctl"), "-D", str(data), *args]),
                              capture_output=True, text=True)
        if check and done.returncode != 0:
            raise ServiceError(f"pg_ctl {args[0]} failed: {done.stderr.strip() or done.stdout.strip()}; "
                               f"see {self.log_file('postgres')}")
        return done

    def _postgres_up(self, log: Callable[[str], None]) -> None:
        root, data = self.endpoints.postgres_root, self.endpoints.postgres_root / "data"
        bin_dir = postgres_bin()
        if not (data / "PG_VERSION").exists():
            root.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(root, "postgres", "postgres")
                reach = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-w", str(root)])
                if reach.returncode != 0:
                    raise ServiceError(f"the postgres user cannot write {root}: a folder above it is not traversable "
                                       "by other users (e.g. a 0700 temporary directory); put the state directory "
                                       "where other users can reach it (--state-dir)")
            done = subprocess.run(self._as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
                                                     "--auth=trust", "--encoding=UTF8", "--no-instructions"]),
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise ServiceError(f"initdb {data} failed: {done.stderr.strip()}")
            log(f"postgres: cluster created in {data}")
        self.log_file("postgres").touch()
        if os.geteuid() == 0:
            shutil.chown(self.log_file("postgres"), "postgres", "postgres")
        if self._pg_ctl("status", check=False).returncode != 0:
            self._pg_ctl("start", "-w", "-t", str(int(self.settings.startup_timeout_s)), "-l", str(self.log_file("postgres")),
                         "-o", f"-c listen_addresses={self.settings.host} -p {self.settings.postgres_port} "
                               f"-c unix_socket_directories={root}")
            log(f"postgres: up on {self.settings.host}:{self.settings.postgres_port}")
        else:
            log("postgres: already running")
        self._create_database("mlflow")

    def _create_database(self, name: str) -> None:
        import psycopg2

        deadline = time.monotonic() + self.settings.startup_timeout_s
        while True:
            try:
                connection = psycopg2.connect(host=self.settings.host, port=self.settings.postgres_port, user="postgres",
                                              dbname="postgres", connect_timeout=3)
                break
            except psycopg2.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise ServiceError(f"postgres does not accept connections: {exc}") from exc
                time.sleep(0.5)
        connection.autocommit = True  # CREATE DATABASE refuses a transaction block (so no `with connection`)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()

    def _postgres_down(self, log: Callable[[str], None]) -> None:
        if self._pg_ctl("status", check=False).returncode == 0:
            self._pg_ctl("stop", "-m", "fast", "-w")
            log("postgres: stopped")
