"""The local services' secrets, generated at the first `services up` and kept under
<state>/services/secrets/ (0700; every file 0600): PostgreSQL's password (and a libpq password
file), MLflow's admin and chorus passwords, the Prefect API's auth string, and a certificate
authority with a certificate for Dask's TLS (the scheduler, its workers and chorus's clients each
present one it signed). `chorus services rotate` replaces them."""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from chorus.io import write_text_atomic

MLFLOW_ADMIN = "admin"
MLFLOW_USER = "chorus"
PREFECT_USER = "chorus"
CERTIFICATE_DAYS = 825


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

    @property
    def dask_cert(self) -> Path:
        return self._file("dask-node.pem")

    @property
    def dask_key(self) -> Path:
        return self._file("dask-node.key")

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
        if not (self.dask_ca.exists() and self.dask_cert.exists() and self.dask_key.exists()):
            self._dask_certificates(dask_host)
        return self

    def rotate(self) -> None:
        """Forgets every secret: the next ``ensure`` makes new ones."""
        for path in self.folder.glob("*"):
            path.unlink()

    def _dask_certificates(self, host: str) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        now = datetime.datetime.now(datetime.UTC)
        later = now + datetime.timedelta(days=CERTIFICATE_DAYS)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chorus local services CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(later)
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        try:
            names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(host))]
        except ValueError:
            names = [x509.DNSName(host)]
        node = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chorus dask")]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(later)
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        pem = serialization.Encoding.PEM
        write_text_atomic(self.dask_ca, ca.public_bytes(pem).decode())
        write_text_atomic(self.dask_cert, node.public_bytes(pem).decode())
        write_text_atomic(self.dask_key, key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()).decode())
        # the CA's key is not kept: a new certificate means a new CA (rotate)

    def dask_environment(self) -> dict[str, str]:
        """Dask's own configuration variables: every client and worker started with them presents
        the certificate and trusts only the CA."""
        return {
            "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
            "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(self.dask_ca),
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(self.dask_cert),
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(self.dask_key),
            "DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__CERT": str(self.dask_cert),
            "DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__KEY": str(self.dask_key),
            "DASK_DISTRIBUTED__COMM__TLS__WORKER__CERT": str(self.dask_cert),
            "DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY": str(self.dask_key),
        }

