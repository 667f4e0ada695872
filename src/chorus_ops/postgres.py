"""The local services' PostgreSQL (MLflow's backend store): a cluster under
<state>/services/postgres, managed with pg_ctl (which keeps its own pid file) and run as the
postgres user when we are root (PostgreSQL refuses root); scram-sha-256 password logins over TCP,
peer on its socket."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chorus.config import ServicesSettings
from chorus.errors import ChorusError
from chorus.io import write_text_atomic
from chorus_ops.credentials import ServiceSecrets


class PostgresError(ChorusError):
    """PostgreSQL did not start, stop or accept a login; the message names its log."""


def postgres_bin() -> Path:
    """Debian's PostgreSQL binaries (/usr/lib/postgresql/<version>/bin), newest version first."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name)
                        if p.parent.parent.name.isdigit() else 0, reverse=True)
    if not candidates:
        raise PostgresError("PostgreSQL is not installed (no /usr/lib/postgresql/<version>/bin/pg_ctl): "
                            "run infra/local/install-system-packages.sh --services")
    return candidates[0].parent


def _set_password(cursor: Any, password: str) -> None:
    cursor.execute("ALTER ROLE postgres PASSWORD %s", (password,))


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@dataclass(frozen=True)
class LocalPostgres:
    """One cluster: ``root`` holds ``data/`` and the socket; its password is the secrets'."""

    settings: ServicesSettings
    root: Path
    log_file: Path
    secrets: ServiceSecrets

    @property
    def data(self) -> Path:
        return self.root / "data"

    def running(self) -> bool:
        return self._pg_ctl("status", check=False).returncode == 0

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        if not self.data.exists():
            return subprocess.CompletedProcess(args, 3, "", "no cluster")
        done = subprocess.run(_as_postgres([str(postgres_bin() / "pg_ctl"), "-D", str(self.data), *args]),
                              capture_output=True, text=True)
        if check and done.returncode != 0:
            raise PostgresError(f"pg_ctl {args[0]} failed: {done.stderr.strip() or done.stdout.strip()}; see {self.log_file}")
        return done

    def up(self, database: str, log: Callable[[str], None]) -> None:
        """Create the cluster where there is none, start it where it is stopped, make ``database``."""
        if not (self.data / "PG_VERSION").exists():
            self._create_cluster(log)
        self.log_file.touch()
        if os.geteuid() == 0:
            shutil.chown(self.log_file, "postgres", "postgres")
        if not self.running():
            s = self.settings
            self._pg_ctl("start", "-w", "-t", str(int(s.startup_timeout_s)), "-l", str(self.log_file),
                         "-o", f"-c listen_addresses={s.host} -p {s.postgres_port} -c unix_socket_directories={self.root}")
            log(f"postgres: up on {s.host}:{s.postgres_port}")
        else:
            log("postgres: already running")
        self._create_database(database)
        self._refuse_trust()

    def _create_cluster(self, log: Callable[[str], None]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            reach = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-w", str(self.root)])
            if reach.returncode != 0:
                raise PostgresError(f"the postgres user cannot write {self.root}: a folder above it is not traversable "
                                    "by other users (e.g. a 0700 temporary directory); put the state directory "
                                    "where other users can reach it (--state-dir)")
        # the password file is read by initdb (the postgres user) and removed at once
        password_file = self.root / ".initdb-password"
        write_text_atomic(password_file, self.secrets.postgres_password)
        if os.geteuid() == 0:
            shutil.chown(password_file, "postgres", "postgres")
        try:
            done = subprocess.run(_as_postgres([
                str(postgres_bin() / "initdb"), "-D", str(self.data), "-U", "postgres", "--pwfile", str(password_file),
                "--auth-host=scram-sha-256", "--auth-local=peer", "--encoding=UTF8", "--no-instructions"]),
                capture_output=True, text=True)
        finally:
            password_file.unlink(missing_ok=True)
        if done.returncode != 0:
            raise PostgresError(f"initdb {self.data} failed: {done.stderr.strip()}")
        log(f"postgres: cluster created in {self.data} (password logins over TCP, peer on the socket)")

    def _refuse_trust(self) -> None:
        """A cluster made before passwords (``trust``): pg_hba.conf rewritten to scram-sha-256
        over TCP and peer on the socket, and reloaded (its password is set already)."""
        hba = self.data / "pg_hba.conf"
        rules = [line.split() for line in hba.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if not any(rule[-1] == "trust" for rule in rules):
            return
        hba.write_text("local all all peer\nhost all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n")
        self._pg_ctl("reload")

    def connect(self, dbname: str = "postgres") -> Any:
        import psycopg2

        return psycopg2.connect(host=self.settings.host, port=self.settings.postgres_port, user="postgres",
                                password=self.secrets.postgres_password, dbname=dbname, connect_timeout=3)

    def set_password(self, password: str) -> None:
        """The superuser's password, changed by logging in with the current one."""
        connection = self.connect()
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                _set_password(cursor, password)
        finally:
            connection.close()

    def _create_database(self, name: str) -> None:
        import psycopg2

        deadline = time.monotonic() + self.settings.startup_timeout_s
        while True:
            try:
                connection = self.connect()
                break
            except psycopg2.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise PostgresError(f"postgres does not accept connections: {exc}") from exc
                time.sleep(0.5)
        connection.autocommit = True  # CREATE DATABASE refuses a transaction block (so no `with connection`)
        try:
            with connection.cursor() as cursor:
                # (a cluster made under trust gets its password here, before trust is removed)
                _set_password(cursor, self.secrets.postgres_password)
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()

    def down(self, log: Callable[[str], None]) -> None:
        if self.running():
            self._pg_ctl("stop", "-m", "fast", "-w")
            log("postgres: stopped")
