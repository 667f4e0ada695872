"""A service that does not answer is named, with its address, from the real clients' own errors
(MLflow's requests client, Prefect's httpx client, Dask's client), and the CLI says it in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chorus.config import ChorusSettings
from chorus.outage import service_addresses, service_outage, without_credentials
from chorus.registry import retry_environment
from chorus_ops.processes import free_ports


@pytest.fixture
def closed_port() -> int:
    return free_ports(1)[0]  # nothing listens there once chosen


def test_mlflow_refused_is_named_with_its_address(closed_port, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"http://127.0.0.1:{closed_port}"
    with pytest.raises(Exception) as caught:
        MlflowClient(uri).get_experiment_by_name("chorus")
    settings = ChorusSettings(mlflow_tracking_uri=uri)
    outage = service_outage(caught.value, service_addresses(settings))
    assert outage is not None and outage.service == "MLflow" and outage.address == uri
    assert str(outage).startswith(f"MLflow at {uri} is unreachable (")


def test_prefect_and_dask_refusals_are_named(closed_port):
    import httpx
    from distributed import Client

    api = f"http://127.0.0.1:{closed_port}/api"
    with pytest.raises(httpx.ConnectError) as refused:
        httpx.get(f"{api}/health")
    settings = ChorusSettings(prefect_api_url=api, compute={"address": f"tcp://127.0.0.1:{closed_port}"})
    outage = service_outage(refused.value, service_addresses(settings))
    assert outage is not None and (outage.service, outage.address) == ("Prefect server", api)

    with pytest.raises(OSError) as timed_out:
        Client(f"tcp://127.0.0.1:{closed_port}", timeout=1, set_as_default=False)
    outage = service_outage(timed_out.value, service_addresses(settings))
    assert outage is not None and (outage.service, outage.address) == ("Dask scheduler", f"tcp://127.0.0.1:{closed_port}")
    assert service_outage(timed_out.value, None) is not None  # the tasks' retry condition knows no addresses


def test_other_failures_are_not_outages():
    settings = ChorusSettings(mlflow_tracking_uri="http://127.0.0.1:5000", compute={"address": "tcp://127.0.0.1:8786"})
    for error in (ValueError("bad value"), FileNotFoundError(2, "No such file", "/x.wav"), TimeoutError("slow task")):
        assert service_outage(error, service_addresses(settings)) is None


def test_addresses_carry_no_credentials_and_the_wait_bounds_mlflows_retries():
    assert without_credentials("http://user:secret@127.0.0.1:5000/") == "http://127.0.0.1:5000/"
    assert "secret" not in str(service_addresses(ChorusSettings(mlflow_tracking_uri="http://u:secret@host:5000")))
    assert "MLflow" not in service_addresses(ChorusSettings())  # SQLite: no server
    assert retry_environment(30)["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"
    assert retry_environment(0)["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"


def test_cli_names_a_dead_tracking_server_in_one_line(closed_port, tmp_path):
    uri = f"http://127.0.0.1:{closed_port}"
    done = subprocess.run([sys.executable, "-m", "chorus_ops", "--state-dir", str(tmp_path / "state"),
                           "--set", f"mlflow_tracking_uri={uri}", "--set", "orchestration.service_wait_s=0", "promote"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=180)
    assert done.returncode == 4, done.stderr[-3000:]  # a service outage
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: MLflow at {uri} is unreachable (connection refused): start it again (`chorus services up` "
                      "for the local services) and run the same command"], done.stderr[-3000:]


def test_every_shard_names_a_scheduler_that_drops_the_clients_handshake():
    """The scheduler killed while the flow's client connects: the stream closes mid-handshake. The
    first shard's error and those of the shards after it (which fail at once, without waiting
    their own timeout) all name the Dask scheduler."""
    import socket
    import threading

    from chorus.compute import DASK_CLIENTS

    listener = socket.create_server(("127.0.0.1", 0))
    address = f"tcp://127.0.0.1:{listener.getsockname()[1]}"

    def drop_every_connection() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connection.close()

    threading.Thread(target=drop_every_connection, daemon=True).start()
    errors = []
    try:
        for _ in range(3):
            with pytest.raises(OSError) as dropped:
                DASK_CLIENTS.get(address)
            errors.append(dropped.value)
    finally:
        DASK_CLIENTS.close(address)
        listener.close()
    for error in errors:
        outage = service_outage(error, {"Dask scheduler": address})
        assert outage is not None and (outage.service, outage.address) == ("Dask scheduler", address)
