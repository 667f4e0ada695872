"""The local services a team runs chorus against, as real processes (infra/local, `make services-up`).

PostgreSQL (``chorus_ops.postgres``), an MLflow tracking server on it with a local artifact root, a
Prefect server with its UI, a Dask scheduler with workers and, optionally, `chorus serve` (the
deployments). Each is started only when it is not already healthy, must pass a health check
before `up` returns, and leaves its pid and log under <state>/services/. `down` stops them in
the reverse order: the deployments and the workers before the servers they talk to. Their
credentials: ``chorus_ops.credentials``.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from chorus.compute import WORKER_ENVIRON
from chorus.config import ChorusSettings, ServicesSettings
from chorus.errors import ChorusError
from chorus.io import write_text_atomic
from chorus.state import TELEMETRY_OFF, StateDir
from chorus_ops.credentials import MLFLOW_ADMIN, MLFLOW_USER, ServiceSecrets
from chorus_ops.environment import settings_env_name, shell_exports
from chorus_ops.postgres import LocalPostgres
from chorus_ops.processes import Account, Service, alive, http_ok, port_open


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
        """Without the password: libpq reads it from the PGPASSFILE the server is started with."""
        return f"postgresql+psycopg2://postgres@{self.settings.host}:{self.settings.postgres_port}/mlflow"

    @property
    def dask_address(self) -> str:
        return f"tls://{self.settings.host}:{self.settings.dask_port}"

    def chorus_environment(self) -> dict[str, str]:
        """CHORUS_* variables (names from the settings model) that send every run to these services."""
        return {
            settings_env_name("prefect_api_url"): self.prefect_api_url,
            settings_env_name("mlflow_tracking_uri"): self.mlflow_url,
            settings_env_name("compute", "address"): self.dask_address,
        }


class LocalServices:
    """Start, check and stop the local services of one state directory."""

    def __init__(self, settings: ChorusSettings, deployments: frozenset[str] = frozenset()) -> None:
        """``deployments``: the names `chorus serve` registers (its health check waits for them)."""
        self.settings = settings.services
        self.deployments = deployments
        self.state = StateDir(settings.state_dir)
        self.root = self.state.root / "services"
        self.endpoints = Endpoints(self.settings, self.root / "postgres")
        self.secrets = ServiceSecrets(self.root / "secrets")
        self.postgres = LocalPostgres(self.settings, self.endpoints.postgres_root, self.log_file("postgres"), self.secrets)
        self.chorus_settings = settings
        self.users: dict[Account, str | None] = {}  # set by up: who each account runs as, when not ourselves

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
    def server_files(self) -> Path:
        """MLflow's and Prefect's copies of the secrets they read (0700, owned by services.run_as)."""
        return self.root / "server"

    @property
    def scheduler_files(self) -> Path:
        """The Dask scheduler's copies of its certificate (0700, owned by services.dask_run_as)."""
        return self.root / "scheduler"

    @property
    def mlflow_auth_db(self) -> Path:
        return self.root / "mlflow" / "auth.db"

    @staticmethod
    def _system_user(user: str) -> str | None:
        """``user`` when we are root (made as a system user where missing), else None: every
        service runs as ourselves."""
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam(user)
        except KeyError:
            done = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise ServiceError(f"cannot create the services' user {user}: {done.stderr.strip()} "
                                   "(set services.run_as and services.dask_run_as to existing unprivileged users)") from None
        return user

    @staticmethod
    def _runs_python(user: str, log: Callable[[str], None]) -> bool:
        """Whether ``user`` can start this Python. Where it cannot (installed under a folder it may
        not enter, e.g. /root), its servers run as root, and the log says why."""
        try:
            probe = subprocess.run([sys.executable, "-c", "pass"], user=user, group=user, extra_groups=[],
                                   capture_output=True, text=True, cwd="/")
            why = probe.stderr.strip().splitlines()[-1] if probe.returncode != 0 and probe.stderr.strip() else ""
            failed = probe.returncode != 0
        except OSError as error:  # the interpreter itself cannot be executed by that user
            failed, why = True, str(error)
        if failed:
            log(f"warning: {user} cannot start {sys.executable} ({why}); the servers it would run run as root. Install "
                "chorus where other users may run it (e.g. under /opt) to run them unprivileged.")
        return not failed

    def _prepare_server_files(self, log: Callable[[str], None]) -> None:
        """The folders the servers write and the copies of the secrets they read, each account's
        owned by its user. MLflow and Prefect hold no Dask key: the scheduler's runs code on the
        workers (it gathers from them and relays ``run``), so it lives with another user."""
        owners: dict[Account, str | None] = {"servers": self._system_user(self.settings.run_as),
                                             "scheduler": self._system_user(self.settings.dask_run_as)}
        self.users = {"caller": None, **{account: user if user and self._runs_python(user, log) else None
                                         for account, user in owners.items()}}
        copies: dict[Account, tuple[Path, tuple[Path, ...]]] = {
            "servers": (self.server_files, (self.secrets.pgpass, self.secrets.mlflow_auth_config)),
            "scheduler": (self.scheduler_files, (self.secrets.dask_ca, *self.secrets.dask_certificate("scheduler"))),
        }
        for folder, given in copies.values():
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o700)
            for secret in given:
                write_text_atomic(folder / secret.name, secret.read_text())
            for stale in {p.name for p in folder.iterdir()} - {p.name for p in given}:
                (folder / stale).unlink()  # e.g. an earlier version's Dask key in the servers' folder
        owned: dict[Account, list[Path]] = {
            "servers": [self.server_files, self.mlflow_auth_db.parent, self.root / "mlartifacts", self.root / "prefect"],
            "scheduler": [self.scheduler_files],
        }
        # owned by their user even where the server runs as root: the other account cannot read them
        for account, folders in owned.items():
            owner = owners[account]
            if not owner:
                continue
            for folder in folders:
                folder.mkdir(parents=True, exist_ok=True)
                for path in [folder, *folder.rglob("*")]:
                    shutil.chown(path, owner, owner)

    @property
    def env_file(self) -> Path:
        """`source` it to point a shell's chorus commands (and prefect/mlflow CLIs) at the services."""
        return self.root / "chorus.env"

    def client_environment(self) -> dict[str, str]:
        """What points a process at these services and lets it in: chorus's settings (this state
        directory included), the Prefect and MLflow clients' own variables with their credentials,
        and Dask's TLS configuration. `chorus serve` runs with it; chorus.env (0600) exports it."""
        return {**self.endpoints.chorus_environment(), settings_env_name("state_dir"): str(self.state.root),
                "PREFECT_API_URL": self.endpoints.prefect_api_url, "PREFECT_API_AUTH_STRING": self.secrets.prefect_auth_string,
                "MLFLOW_TRACKING_URI": self.endpoints.mlflow_url, "MLFLOW_TRACKING_USERNAME": MLFLOW_USER,
                "MLFLOW_TRACKING_PASSWORD": self.secrets.mlflow_password, **self.secrets.dask_environment()}

    def prefect_authorization(self) -> dict[str, str]:
        """The header the Prefect API asks of every request (HTTP basic of the auth string)."""
        return {"Authorization": "Basic " + base64.b64encode(self.secrets.prefect_auth_string.encode()).decode()}

    # -- the services, in start order
    def services(self) -> list[Service]:
        s, e = self.settings, self.endpoints
        bin_dir = Path(sys.executable).parent
        quiet = {**TELEMETRY_OFF, "PYTHONUNBUFFERED": "1"}
        auth = self.secrets
        own = self.server_files  # MLflow's and Prefect's copies of their secrets, owned by services.run_as
        prefect_env = {**quiet, "PREFECT_HOME": str(self.root / "prefect"), "PREFECT_UI_ENABLED": "true",
                       "PREFECT_SERVER_UI_ENABLED": "true", "PREFECT_API_URL": e.prefect_api_url,
                       "PREFECT_SERVER_API_HOST": s.host, "PREFECT_SERVER_API_PORT": str(s.prefect_port),
                       "PREFECT_SERVER_API_AUTH_STRING": auth.prefect_auth_string,
                       "PREFECT_API_AUTH_STRING": auth.prefect_auth_string}
        mlflow_env = {**quiet, "MLFLOW_AUTH_CONFIG_PATH": str(own / auth.mlflow_auth_config.name),
                      "PGPASSFILE": str(own / auth.pgpass.name), "HOME": str(self.root / "mlflow"),
                      "MLFLOW_AUTH_ADMIN_PASSWORD": auth.mlflow_admin_password,
                      "MLFLOW_FLASK_SERVER_SECRET_KEY": auth.mlflow_flask_key}
        worker_env = {**quiet, **{k: str(v) for k, v in WORKER_ENVIRON.items()}}  # as the local cluster's workers
        worker_cert, worker_key = auth.dask_certificate("worker")
        tls = ["--tls-ca-file", str(auth.dask_ca), "--tls-cert", str(worker_cert), "--tls-key", str(worker_key)]
        scheduler_cert, scheduler_key = auth.dask_certificate("scheduler")
        scheduler_own = self.scheduler_files
        scheduler_tls = ["--tls-ca-file", str(scheduler_own / auth.dask_ca.name),
                         "--tls-cert", str(scheduler_own / scheduler_cert.name), "--tls-key", str(scheduler_own / scheduler_key.name)]
        dashboard = ["--dashboard-address", f"{s.host}:{s.dask_dashboard_port}"] if s.dask_dashboard_port else ["--no-dashboard"]
        out = [
            Service("mlflow", [str(bin_dir / "mlflow"), "server", "--app-name", "basic-auth", "--backend-store-uri", e.postgres_uri,
                               "--artifacts-destination", (self.root / "mlartifacts").as_uri(), "--serve-artifacts",
                               "--host", s.host, "--port", str(s.mlflow_port), "--workers", "1"],
                    http_ok(f"{e.mlflow_url}/health"), mlflow_env, e.mlflow_url, account="servers"),
            Service("prefect-server", [str(bin_dir / "prefect"), "server", "start", "--host", s.host,
                                       "--port", str(s.prefect_port)],
                    http_ok(f"{e.prefect_api_url}/health"), {**prefect_env, "HOME": str(self.root / "prefect")},
                    e.prefect_ui_url, account="servers"),
            Service("dask-scheduler", [str(bin_dir / "dask"), "scheduler", "--host", s.host, "--port", str(s.dask_port),
                                       "--protocol", "tls", *scheduler_tls, *dashboard],
                    lambda: port_open(s.host, s.dask_port), {**worker_env, "HOME": str(scheduler_own)}, e.dask_address,
                    account="scheduler"),
        ]
        for n in range(s.dask_workers):
            out.append(Service(f"dask-worker-{n}", [str(bin_dir / "dask"), "worker", e.dask_address, "--nthreads", "1",
                                                    "--memory-limit", s.dask_worker_memory, "--name", f"local-{n}",
                                                    "--host", s.host, "--no-dashboard", *tls],
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

                with Client(self.endpoints.dask_address, timeout=3, set_as_default=False, security=self.dask_security()) as client:
                    workers = client.scheduler_info(n_workers=-1)["workers"].values()
                    return any(w.get("name") == name for w in workers)
            except OSError:
                return False
        return check

    def dask_security(self) -> Any:
        """distributed's ``Security`` with this state's certificate: what a client needs to connect."""
        from distributed.security import Security

        cert, key = self.secrets.dask_certificate("client")
        return Security(tls_ca_file=str(self.secrets.dask_ca), tls_client_cert=str(cert), tls_client_key=str(key),
                        require_encryption=True)

    def _mlflow_request(self, method: str, path: str, body: dict[str, Any], user: str, password: str) -> None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request = urllib.request.Request(f"{self.endpoints.mlflow_url}/api/2.0/mlflow/{path}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
                                         method=method)
        with urllib.request.urlopen(request, timeout=30):
            pass

    def _mlflow_user(self) -> None:
        """The MLflow user chorus logs in as (it owns what it creates), made by the admin; its
        password follows the secrets file."""
        a = self.secrets
        try:
            self._mlflow_request("POST", "users/create", {"username": MLFLOW_USER, "password": a.mlflow_password},
                                 MLFLOW_ADMIN, a.mlflow_admin_password)
        except urllib.error.HTTPError as error:
            if error.code != 400 or b"RESOURCE_ALREADY_EXISTS" not in error.read():
                raise ServiceError(f"mlflow: creating the {MLFLOW_USER} user failed: HTTP {error.code}") from error
            self._mlflow_request("PATCH", "users/update-password", {"username": MLFLOW_USER, "password": a.mlflow_password},
                                 MLFLOW_ADMIN, a.mlflow_admin_password)

    def _deployments_served(self) -> Callable[[], bool]:
        """Ready when the serve process has registered every deployment (``flow/deployment``)
        with the Prefect server."""

        def post(path: str) -> Any:
            request = urllib.request.Request(f"{self.endpoints.prefect_api_url}{path}", data=b"{}",
                                             headers={"Content-Type": "application/json", **self.prefect_authorization()},
                                             method="POST")
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read())

        def check() -> bool:
            try:
                flows = {f["id"]: f["name"] for f in post("/flows/filter")}
                names = {f"{flows.get(d['flow_id'], '?')}/{d['name']}" for d in post("/deployments/filter")}
                return bool(names) and self.deployments <= names
            except (OSError, ValueError):  # URLError is an OSError
                return False
        return check

    # -- lifecycle
    def up(self, log: Callable[[str], None] = print) -> dict[str, str]:
        """Start what is not running, wait for each health check, write chorus.env; returns it."""
        for folder in ("run", "logs", "mlartifacts", "prefect", "prefect-client"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        self.secrets.ensure(self.settings.host, self.settings.postgres_port, self.mlflow_auth_db, self.settings.host)
        self._prepare_server_files(log)
        self.postgres.up("mlflow", log)
        write_text_atomic(self.settings_file, yaml.safe_dump(self.chorus_settings.model_dump(mode="json"), sort_keys=False))
        services = self.services()
        for wave in sorted({s.wave for s in services}):
            started: list[tuple[Service, subprocess.Popen[bytes]]] = []
            for service in (s for s in services if s.wave == wave):
                pid = self._pid(service.name)
                if pid and alive(pid) and service.healthy():
                    log(f"{service.name}: already running (pid {pid})")
                else:
                    started.append((service, self._launch(service)))
            for service, process in started:  # started together (the servers' start-ups overlap)
                self._wait_healthy(service, process, log)
            if any(service.name == "mlflow" for service in services if service.wave == wave):
                self._mlflow_user()
        env = self.client_environment()
        write_text_atomic(self.env_file, shell_exports(env))  # 0600, like every atomic write
        return env

    def rotate(self, log: Callable[[str], None] = print) -> dict[str, str]:
        """New credentials for every service while they run: PostgreSQL's and MLflow's passwords
        changed in place (with the old ones), then the Prefect server, Dask and chorus serve
        restarted on a new auth string and certificates; chorus.env rewritten. Returns it."""
        status = self.status()
        if not (status["postgres"]["running"] and status["mlflow"]["healthy"]):
            raise ServiceError("rotation changes the running services' credentials: start them first (chorus services up)")
        old = self.secrets
        staged = ServiceSecrets(self.root / "secrets.new")
        staged.rotate()
        staged.ensure(self.settings.host, self.settings.postgres_port, self.mlflow_auth_db, self.settings.host)

        def admin_password(new: str, current: str) -> None:
            self._mlflow_request("PATCH", "users/update-password", {"username": MLFLOW_ADMIN, "password": new,
                                                                     "current_password": current}, MLFLOW_ADMIN, current)

        admin_password(staged.mlflow_admin_password, old.mlflow_admin_password)
        try:
            self.postgres.set_password(staged.postgres_password)
        except Exception:
            admin_password(old.mlflow_admin_password, staged.mlflow_admin_password)  # as it was: nothing rotated
            raise
        retired = self.root / "secrets.old"
        shutil.rmtree(retired, ignore_errors=True)
        old.folder.rename(retired)
        staged.folder.rename(old.folder)
        shutil.rmtree(retired)
        self._prepare_server_files(log)  # MLflow's server logs in to PostgreSQL with the new password from here on
        self._mlflow_user()
        log("postgres, mlflow: passwords changed")
        restarted = [s for s in self.services() if s.name != "mlflow"]
        for wave in sorted({s.wave for s in restarted}, reverse=True):
            self._stop([s.name for s in restarted if s.wave == wave], log)
        return self.up(log)

    def _launch(self, service: Service) -> subprocess.Popen[bytes]:
        with self.log_file(service.name).open("ab") as logfile:
            user = self.users.get(service.account)
            process = subprocess.Popen(service.argv, stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env={**os.environ, **service.env}, cwd=self.state.root,
                                       user=user, group=user, extra_groups=[] if user else None,
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
            self.postgres.down(log)

    def _stop(self, names: list[str], log: Callable[[str], None], grace_s: float = 20.0) -> None:
        """SIGTERM to each service's process group together, SIGKILL to what is left after ``grace_s``."""
        pids = {name: pid for name in names if (pid := self._pid(name))}
        for pid in pids.values():
            if alive(pid):
                try:
                    os.killpg(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace_s
        while any(alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.2)
        for name, pid in pids.items():
            if alive(pid):
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
        out["postgres"] = {"running": self.postgres.running(), "url": f"{self.settings.host}:{self.settings.postgres_port}"}
        for service in self.services():
            pid = self._pid(service.name)
            running = bool(pid and alive(pid))
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
