"""The local services' secrets, generated at the first `services up` and kept under
<state>/services/secrets/ (0700; every file 0600): PostgreSQL's password (and a libpq password
file), MLflow's admin and chorus passwords, the Prefect API's auth string, and a certificate
authority for Dask's TLS with one certificate per role (the scheduler, its workers, chorus's
clients), so each process holds only its own key. `chorus services rotate` replaces them."""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from chorus.io import write_text_atomic

MLFLOW_ADMIN = "admin"
MLFLOW_USER = "chorus"
PREFECT_USER = "chorus"
CERTIFICATE_DAYS = 825

DaskRole = Literal["scheduler", "worker", "client"]
# What each role's certificate may do in a TLS handshake. The scheduler and the workers both listen
# and connect (the scheduler gathers results from the workers); chorus's clients only connect.
DASK_ROLES: dict[DaskRole, tuple[x509.ObjectIdentifier, ...]] = {
    "scheduler": (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
    "worker": (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
    "client": (ExtendedKeyUsageOID.CLIENT_AUTH,),
}


@dataclass(frozen=True)
class ServiceSecrets:
    """Named secret files in one folder; ``ensure`` makes the missing ones."""

    folder: Path

    def _file(self, name: str) -> Path:
        return self.folder / name

    def _read(self, name: str) -> str:
        """A secret's value; empty before ``ensure`` made it (services listed, stopped or checked
        before they ever started)."""
        path = self._file(name)
        return path.read_text().strip() if path.exists() else ""

    @property
    def postgres_password(self) -> str:
        return self._read("postgres.password")

    @property
    def pgpass(self) -> Path:
        """libpq's password file (PGPASSFILE): how MLflow's server and psycopg2 log in."""
        return self._file("pgpass")

    @property
    def mlflow_admin_password(self) -> str:
        return self._read("mlflow-admin.password")

    @property
    def mlflow_password(self) -> str:
        return self._read("mlflow-chorus.password")

    @property
    def mlflow_flask_key(self) -> str:
        """The MLflow server's key for its CSRF tokens."""
        return self._read("mlflow-flask.key")

    @property
    def mlflow_auth_config(self) -> Path:
        return self._file("mlflow-auth.ini")

    @property
    def prefect_auth_string(self) -> str:
        """``user:password``, what the Prefect server asks of every API request (HTTP basic)."""
        return self._read("prefect.auth")

    @property
    def dask_ca(self) -> Path:
        return self._file("dask-ca.pem")

    def dask_certificate(self, role: DaskRole) -> tuple[Path, Path]:
        """The certificate and key of a Dask role (``DASK_ROLES``)."""
        return self._file(f"dask-{role}.pem"), self._file(f"dask-{role}.key")

    def ensure(self, postgres_host: str, postgres_port: int, mlflow_auth_db: Path, dask_host: str) -> ServiceSecrets:
        """Generates what is missing; what exists is kept (the services already use it)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o700)
        for name in ("postgres.password", "mlflow-admin.password", "mlflow-chorus.password", "mlflow-flask.key"):
            if not self._file(name).exists():
                write_text_atomic(self._file(name), secrets.token_urlsafe(24))
        if not self._file("prefect.auth").exists():
            write_text_atomic(self._file("prefect.auth"), f"{PREFECT_USER}:{secrets.token_urlsafe(24)}")
        write_text_atomic(self.pgpass, f"{postgres_host}:{postgres_port}:*:postgres:{self.postgres_password}\n")
        write_text_atomic(self.mlflow_auth_config, "\n".join([
            "[mlflow]",
            "default_permission = NO_PERMISSIONS",
            f"database_uri = sqlite:///{mlflow_auth_db}",
            f"admin_username = {MLFLOW_ADMIN}",
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
            "",
        ]))
        files = [self.dask_ca, *(path for role in DASK_ROLES for path in self.dask_certificate(role))]
        if not all(path.exists() for path in files):
            self._dask_certificates(dask_host)
        return self

    def rotate(self) -> None:
        """Forgets every secret: the next ``ensure`` makes new ones."""
        for path in self.folder.glob("*"):
            path.unlink()

    def _dask_certificates(self, host: str) -> None:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        now = datetime.datetime.now(datetime.UTC)
        later = now + datetime.timedelta(days=CERTIFICATE_DAYS)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chorus local services CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(later)
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .sign(ca_key, hashes.SHA256()))
        try:
            names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(host))]
        except ValueError:
            names = [x509.DNSName(host)]
        pem = serialization.Encoding.PEM
        write_text_atomic(self.dask_ca, ca.public_bytes(pem).decode())
        for role, usages in DASK_ROLES.items():
            key = ec.generate_private_key(ec.SECP256R1())
            leaf = (x509.CertificateBuilder()
                    .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"chorus dask {role}")]))
                    .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                    .not_valid_before(now).not_valid_after(later)
                    .add_extension(x509.SubjectAlternativeName(names), critical=False)
                    .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=True)
                    .sign(ca_key, hashes.SHA256()))
            cert_path, key_path = self.dask_certificate(role)
            write_text_atomic(cert_path, leaf.public_bytes(pem).decode())
            write_text_atomic(key_path, key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()).decode())
        # the CA's key is not kept: a new certificate means a new CA (rotate)

    def dask_environment(self) -> dict[str, str]:
        """Dask's own configuration variables for chorus's processes: a client started with them
        presents the client certificate and trusts only the CA."""
        cert, key = self.dask_certificate("client")
        return {
            "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
            "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(self.dask_ca),
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(cert),
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(key),
        }

