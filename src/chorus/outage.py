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

# What the MLflow server relays when its PostgreSQL store is gone (only its text crosses HTTP).
_POSTGRES_AT = re.compile(r'server at "([^"]+)", port (\d+)')
_STORE_ERROR_CODES = ("INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE")
# distributed's connect timeout is a plain OSError; its message carries the address.
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


def _reason(e: BaseException) -> str:
    """Why a connection failed, in a few words, from the exception's type (its text as a last resort)."""
    import requests

    chain = list(_chain(e))
    if any(isinstance(c, ConnectionRefusedError) or "Connection refused" in f"{c}" for c in chain):
        return "connection refused"
    if any(isinstance(c, TimeoutError | requests.exceptions.Timeout) for c in chain):
        return "timed out"
    if any(isinstance(c, requests.exceptions.RetryError) for c in chain):
        return "no answer after retries"
    if any(isinstance(c, ConnectionResetError | BrokenPipeError) for c in chain):
        return "the connection was closed"
    text = f"{e}".strip()
    return text.splitlines()[0][:160] if text else type(e).__name__


def _request_url(exc: BaseException) -> str | None:
    try:
        request: Any = getattr(exc, "request", None)
        return str(request.url) if request is not None else None
    except RuntimeError:  # httpx raises when the exception carries no request
        return None


def _store_failure(e: BaseException, addresses: dict[str, str]) -> ServiceUnavailableError | None:
    """MLflow answering with server errors: its store (PostgreSQL for the local services) is down."""
    where = (lambda found: f"{found.group(1)}:{found.group(2)}" if found else addresses.get("PostgreSQL"))(
        _POSTGRES_AT.search(f"{e}"))
    if where:
        return ServiceUnavailableError("PostgreSQL", where, "MLflow, which keeps the registry in it, answers with server errors")
    return ServiceUnavailableError("MLflow", addresses.get("MLflow", _api_root(f"{e}")),
                                   "it answers with server errors; its backend store may be down")


def service_outage(exc: BaseException, addresses: dict[str, str] | None) -> ServiceUnavailableError | None:
    """The service whose silence caused ``exc`` (anywhere in its chain), as the error to report;
    None when ``exc`` is not a service going away. Recognised by the exceptions' types: requests'
    (MLflow's client) connection, timeout and retry errors and MLflow's store error codes; httpx's
    transport errors (Prefect's client); distributed's and tornado's closed comms and cancelled
    futures. ``addresses``: from ``service_addresses`` (None: any service, its address unknown)."""
    import httpx
    import requests
    from distributed.client import FutureCancelledError, FuturesCancelledError
    from distributed.comm.core import CommClosedError
    from mlflow.exceptions import MlflowException, RestException
    from tornado.iostream import StreamClosedError

    if addresses is None:
        addresses = {"Prefect server": "?", "Dask scheduler": "?"}
    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, ServiceUnavailableError):
            return e
    mlflow_failure = next((e for e in chain if isinstance(e, MlflowException)), None)
    for e in chain:
        # an error the server answered with (every MlflowException defaults to INTERNAL_ERROR: only a RestException counts)
        if isinstance(e, RestException) and e.error_code in _STORE_ERROR_CODES and "MLflow" in addresses:
            return _store_failure(e, addresses)
        if isinstance(e, requests.exceptions.RetryError) and mlflow_failure is not None:
            return _store_failure(mlflow_failure, addresses)  # too many 5xx answers
        if isinstance(e, requests.exceptions.ConnectionError | requests.exceptions.Timeout) and mlflow_failure is not None:
            return ServiceUnavailableError("MLflow", addresses.get("MLflow", _api_root(f"{mlflow_failure}")), _reason(e))
        if isinstance(e, httpx.TransportError):
            url, prefect = _request_url(e), addresses.get("Prefect server")
            if prefect and (url is None or prefect == "?" or url.startswith(prefect.rsplit("/api", 1)[0])):
                return ServiceUnavailableError("Prefect server", prefect, _reason(e))
        dask = addresses.get("Dask scheduler")
        if dask and isinstance(e, CommClosedError | StreamClosedError | FutureCancelledError | FuturesCancelledError):
            return ServiceUnavailableError("Dask scheduler", dask, "the connection was lost")
        connect = _DASK_AT.search(f"{e}") if isinstance(e, OSError | TimeoutError) else None
        if dask and connect:
            return ServiceUnavailableError("Dask scheduler", connect.group(1) if dask == "?" else dask, "timed out")
    return None


def _api_root(text: str) -> str:
    found = re.search(r"API request to (\S+?)/api/", text)
    return found.group(1) if found else "?"
