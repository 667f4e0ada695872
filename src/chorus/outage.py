"""A service that stops answering in the middle of a run (MLflow, the PostgreSQL store behind it,
the Prefect server, a Dask scheduler): recognised in a failure's exception chain and told as one
line naming the service and its address (MLflow's retries are bounded in ``registry.configure``)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from chorus.config import ChorusSettings
from chorus.errors import ServiceUnavailableError

# What requests/urllib3 (MLflow's client) say when nothing answers at the address.
_UNANSWERED = ("Max retries exceeded", "Connection refused", "Connection aborted", "RemoteDisconnected",
               "Failed to establish a new connection", "Connection reset by peer")
# What psycopg2 says (relayed by the MLflow server) when its database is gone.
_DATABASE_GONE = ("psycopg2.OperationalError", "could not connect to server", "server closed the connection unexpectedly",
                  "terminating connection due to administrator command", "Connection refused\n\tIs the server running")
# What MLflow's client says when the server answers but its store does not (500 or 503, by route).
_SERVER_ERRORS = re.compile(r"too many 50\d error responses|INTERNAL_ERROR|TEMPORARILY_UNAVAILABLE")
_POSTGRES_AT = re.compile(r'server at "([^"]+)", port (\d+)')
_DASK_TYPES = ("CommClosedError", "FutureCancelledError", "FuturesCancelledError", "StreamClosedError")
_DASK_AT = re.compile(r"Timed out trying to connect to (\S+?)(?: after|$)")


def without_credentials(url: str) -> str:
    """``url`` with any user:password@ removed (addresses go into messages and logs)."""
    parts = urlsplit(url)
    if not parts.netloc or "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def service_addresses(settings: ChorusSettings) -> dict[str, str]:
    """The services a run of ``settings`` talks to over the network, by name: address."""
    addresses = {}
    if not settings.tracking_uri.startswith(("sqlite:", "file:", "/")):
        addresses["MLflow"] = without_credentials(settings.tracking_uri)
        local = settings.services
        if urlsplit(addresses["MLflow"]).netloc == f"{local.host}:{local.mlflow_port}":  # the local services' MLflow
            addresses["PostgreSQL"] = f"{local.host}:{local.postgres_port}"
    prefect = settings.prefect_api_url or os.environ.get("PREFECT_API_URL")
    if prefect:
        addresses["Prefect server"] = without_credentials(prefect)
    if settings.compute.address:
        addresses["Dask scheduler"] = settings.compute.address
    return addresses


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
        todo += [e for e in getattr(current, "exceptions", ()) if isinstance(e, BaseException)]  # exception groups


def _reason(text: str) -> str:
    for words, reason in (("Connection refused", "connection refused"), ("Max retries exceeded", "no answer after retries"),
                          ("server closed the connection", "the connection was closed"),
                          ("terminating connection", "the server is shutting down"), ("Timed out", "timed out")):
        if words in text:
            return reason
    line = text.strip().splitlines()[0] if text.strip() else "no answer"
    return line[:160]


def _request_url(exc: BaseException) -> str | None:
    try:
        request: Any = getattr(exc, "request", None)
        return str(request.url) if request is not None else None
    except RuntimeError:  # httpx raises when the exception carries no request
        return None


def service_outage(exc: BaseException, addresses: dict[str, str] | None) -> ServiceUnavailableError | None:
    """The service whose silence caused ``exc`` (anywhere in its chain), as the error to report;
    None when ``exc`` is not a service going away. ``addresses``: from ``service_addresses``
    (None: any service, its address unknown)."""
    if addresses is None:
        addresses = {"Prefect server": "?", "Dask scheduler": "?"}
    for e in _chain(exc):
        if isinstance(e, ServiceUnavailableError):
            return e
        name, text = type(e).__name__, f"{e}"
        module = type(e).__module__
        if module.startswith("mlflow") or "API request to" in text:
            if any(words in text for words in _DATABASE_GONE) or _SERVER_ERRORS.search(text):
                found = _POSTGRES_AT.search(text)
                where = f"{found.group(1)}:{found.group(2)}" if found else addresses.get("PostgreSQL")
                if where:
                    return ServiceUnavailableError("PostgreSQL", where, "MLflow, which keeps the registry in it, answers with server errors")
                return ServiceUnavailableError("MLflow", addresses.get("MLflow", _api_root(text)),
                                               "it answers with server errors; its backend store may be down")
            if any(words in text for words in _UNANSWERED):
                return ServiceUnavailableError("MLflow", addresses.get("MLflow", _api_root(text)), _reason(text))
        if module.startswith("httpx") and name in ("ConnectError", "RemoteProtocolError", "ReadError", "ConnectTimeout",
                                                   "ReadTimeout", "WriteError", "PoolTimeout"):
            url = _request_url(e)
            prefect = addresses.get("Prefect server")
            if prefect and (url is None or prefect == "?" or url.startswith(prefect.rsplit("/api", 1)[0])):
                return ServiceUnavailableError("Prefect server", prefect, _reason(text) if text else name)
        dask = addresses.get("Dask scheduler")
        connect = _DASK_AT.search(text) if isinstance(e, OSError | TimeoutError) else None
        if dask and ((module.startswith("distributed") and name in _DASK_TYPES) or connect):
            where = connect.group(1) if connect and dask == "?" else dask
            return ServiceUnavailableError("Dask scheduler", where, "the connection was lost" if name in _DASK_TYPES else _reason(text))
    return None


def _api_root(text: str) -> str:
    found = re.search(r"API request to (\S+?)/api/", text)
    return found.group(1) if found else "?"
