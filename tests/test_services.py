"""The service tier: the local services started for real (`chorus services up`: PostgreSQL, an
MLflow tracking server on it, a Prefect server with its UI, a Dask scheduler with two workers
and `chorus serve`), deployments triggered from the CLI and from the Prefect UI in headless
Chromium, the pipeline run through them, and everything stopped with no process left behind.

Run alone with `make test-services` (pytest -m services)."""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from chorus_ops.processes import free_ports
from conftest import run_chorus

pytestmark = [pytest.mark.services, pytest.mark.slow]

PREFECT = str(Path(sys.executable).parent / "prefect")
# 20 tracks per style: with fewer, the test split (20%) is too small for the gate's first champion
# to beat the majority baseline reliably.
DEMO = {"styles": ["bach", "essenFolksong"], "tracks_per_style": 20, "clip_seconds": 5.0, "measures": 6, "users": 24,
        "communities": 2, "workers": 2}


# The Prefect API's credentials (HTTP basic of the auth string in chorus.env), set by the fixture.
_AUTH: dict[str, str] = {}


def _api(base: str, path: str, body: dict[str, Any] | None = None, method: str | None = None) -> Any:
    request = urllib.request.Request(f"{base}{path}", data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", **_AUTH},
                                     method=method or ("GET" if body is None else "POST"))
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def _read_env(state: Path) -> dict[str, str]:
    """chorus.env's exports (values as the shell reads them) and the test process pointed at the
    services with them: the Prefect API header, MLflow's user."""
    env = {name: shlex.split(value)[0] for name, value in
           re.findall(r"^export (\w+)=(.*)$", (state / "services" / "chorus.env").read_text(), re.M)}
    _AUTH["Authorization"] = "Basic " + base64.b64encode(env["PREFECT_API_AUTH_STRING"].encode()).decode()
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        os.environ[name] = env[name]
    return env


def _dask_security(env: dict[str, str]) -> Any:
    from distributed.security import Security

    return Security(tls_ca_file=env["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"],
                    tls_client_cert=env["DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT"],
                    tls_client_key=env["DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY"], require_encryption=True)


def _deployment(api: str, name: str) -> dict[str, Any]:
    return _api(api, f"/deployments/name/{name}")


def _runs(api: str, deployment_id: str | None = None, states: list[str] | None = None) -> list[dict[str, Any]]:
    """Flow runs, newest first (a schedule's future runs have no start time: filter by state to skip them)."""
    body: dict[str, Any] = {"sort": "START_TIME_DESC", "limit": 50, "flow_runs": {}}
    if deployment_id:
        body["flow_runs"]["deployment_id"] = {"any_": [deployment_id]}
    if states:
        body["flow_runs"]["state"] = {"type": {"any_": states}}
    return _api(api, "/flow_runs/filter", body)


def _run_count(state: Path) -> int:
    return len(pd.read_parquet(state / "data" / "tracks.parquet"))


@pytest.fixture(scope="module")
def services():
    # The postgres user runs the database and must reach its folder: pytest's tmp_path is 0700.
    root = Path(tempfile.mkdtemp(prefix="chorus-services-"))
    root.chmod(0o755)
    prefect_port, mlflow_port, postgres_port, dask_port = free_ports(4)
    config = root / "chorus.yaml"
    config.write_text(yaml.safe_dump({
        "demo": DEMO,
        "features": {"shard_size": 5},
        # the MFCC + SVM baseline: seconds to train, and it separates these two styles
        "train": {"candidates": ["mfcc_svm_pso"], "svm": {"budget": 12, "particles": 4}},
        "orchestration": {"import_roots": [str(root / "imports")]},  # where a deployment run may read inputs
        "services": {"prefect_port": prefect_port, "mlflow_port": mlflow_port, "postgres_port": postgres_port,
                     "dask_port": dask_port, "dask_dashboard_port": 0, "dask_worker_memory": "2GiB"},
    }))
    state = root / "state"
    base = ("--config", str(config), "--state-dir", str(state))
    started = time.perf_counter()
    up = run_chorus(*base, "services", "up", cwd=root, timeout=420)
    up_seconds = time.perf_counter() - started
    try:
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-4000:]
        env = _read_env(state)
        yield SimpleNamespace(root=root, state=state, base=base, env=env, api=env["PREFECT_API_URL"], up_log=" ".join(up.stderr.split()),
                              ui=env["PREFECT_API_URL"].removesuffix("/api"), mlflow=env["MLFLOW_TRACKING_URI"],
                              postgres_port=postgres_port, up_seconds=up_seconds)
    finally:
        run_chorus(*base, "services", "down", cwd=root, timeout=180)  # no-op when the last test stopped them
        shutil.rmtree(root, ignore_errors=True)
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(name, None)


def _prefect_cli(services: SimpleNamespace, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_API_URL": services.api, "PREFECT_API_AUTH_STRING": services.env["PREFECT_API_AUTH_STRING"]}
    return subprocess.run([PREFECT, *args], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=services.root)


def test_services_are_up_and_deployments_are_served(services):
    """Every service passed its health check; the deployments carry typed, described parameters,
    a concurrency limit of one, and the two schedules with an explicit timezone."""
    status = run_chorus(*services.base, "services", "status", cwd=services.root)
    assert status.returncode == 0, status.stderr
    for name in ("postgres", "mlflow", "prefect-server", "dask-scheduler", "dask-worker-0", "dask-worker-1", "serve"):
        assert re.search(rf"{name}\s.*True", status.stdout), status.stdout
    if os.geteuid() == 0:
        # the network-facing servers run as services.run_as, unless that user cannot start this
        # Python (a pyenv under /root, 0700): then `up` says so
        uids = {}
        for name in ("mlflow", "prefect-server", "dask-scheduler"):
            pid = (services.state / "services" / "run" / f"{name}.pid").read_text().strip()
            uids[name] = next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                              if line.startswith("Uid:"))
        if "cannot start" in services.up_log:
            assert f"chorus-services cannot start {sys.executable}" in services.up_log and set(uids.values()) == {"0"}
        else:
            assert "0" not in uids.values(), uids
    ingest = _deployment(services.api, "ingest/on-demand")
    scale = ingest["parameter_openapi_schema"]["properties"]["demo_scale"]
    assert "demo corpus" in scale["description"] and scale["default"] is None
    assert ingest["global_concurrency_limit"]["limit"] == 1
    assert ingest["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    nightly = _deployment(services.api, "pipeline/nightly-refresh")
    assert nightly["parameters"]["stages"] == ["ingest", "features", "labels", "melody", "drift"]
    schedule = nightly["schedules"][0]["schedule"]
    assert schedule["cron"] == "0 2 * * *" and schedule["timezone"] == "UTC"
    weekly = _deployment(services.api, "pipeline/weekly-retrain")
    assert "train" in weekly["parameters"]["stages"] and weekly["schedules"][0]["schedule"]["cron"] == "0 4 * * 0"


def test_every_service_refuses_a_caller_without_credentials(services):
    """Nothing answers anonymously: MLflow and the Prefect API say 401, a Dask client without a
    certificate signed by the services' CA is turned away, PostgreSQL wants a password over TCP."""
    import psycopg2
    from distributed import Client
    from distributed.security import Security

    guess = "Basic " + base64.b64encode(b"chorus:guess").decode()
    for url, body, authorization in ((f"{services.mlflow}/api/2.0/mlflow/registered-models/search", None, None),
                                     (f"{services.mlflow}/api/2.0/mlflow/registered-models/search", None, guess),
                                     (f"{services.api}/deployments/filter", b"{}", None),
                                     (f"{services.api}/deployments/filter", b"{}", guess)):
        headers = {"Content-Type": "application/json", **({"Authorization": authorization} if authorization else {})}
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=30)
        assert refused.value.code == 401, (url, authorization)
    stranger = Security.temporary()  # a certificate of its own, not signed by the services' CA
    with pytest.raises((OSError, TimeoutError)):
        Client(services.env["CHORUS_COMPUTE__ADDRESS"], security=stranger, timeout=10, set_as_default=False)
    with pytest.raises(OSError):
        Client(services.env["CHORUS_COMPUTE__ADDRESS"].replace("tls://", "tcp://"), timeout=10, set_as_default=False)
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(host="127.0.0.1", port=services.postgres_port, user="postgres", dbname="mlflow", connect_timeout=5)
    secrets = services.state / "services" / "secrets"
    assert (secrets.stat().st_mode & 0o777) == 0o700
    assert all((f.stat().st_mode & 0o777) == 0o600 for f in [*secrets.iterdir(), services.state / "services" / "chorus.env"])


def test_deployment_run_from_the_cli_with_a_parameter(services):
    """`prefect deployment run 'ingest/on-demand' -p demo_scale=0.5` runs in `chorus serve`; the
    parameter halves the corpus."""
    done = _prefect_cli(services, "deployment", "run", "ingest/on-demand", "-p", "demo_scale=0.5", "--watch",
                        "--watch-timeout", "240")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = _runs(services.api, _deployment(services.api, "ingest/on-demand")["id"])[0]
    assert run["state_type"] == "COMPLETED" and run["parameters"]["demo_scale"] == 0.5
    assert run["name"].startswith("ingest · on-demand · ")
    assert _run_count(services.state) == 2 * 10  # two styles, 20 * 0.5 tracks each (40 at the default scale)


def test_a_schedule_fires_in_chorus_serve(services):
    """A schedule added to a served deployment (every 15 s here, so the test need not wait for the
    nightly cron) creates runs that `chorus serve` picks up and completes."""
    deployment = _deployment(services.api, "labels/on-demand")
    done = _prefect_cli(services, "deployment", "schedule", "create", "labels/on-demand", "--interval", "15")
    assert done.returncode == 0, done.stdout + done.stderr
    try:
        deadline = time.monotonic() + 150
        while True:
            finished = [(r["name"], r["state_type"]) for r in _runs(services.api, deployment["id"],
                                                                   ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"])]
            if finished:
                break
            assert time.monotonic() < deadline, "no scheduled run finished within 150 s"
            time.sleep(3)
        assert finished[0][1] == "COMPLETED", finished
        assert _runs(services.api, deployment["id"], ["COMPLETED"])[0]["auto_scheduled"]
    finally:
        _prefect_cli(services, "deployment", "schedule", "clear", "labels/on-demand", "-y")
        for run in _runs(services.api, deployment["id"], ["SCHEDULED"]):  # the schedule's future runs
            _api(services.api, f"/flow_runs/{run['id']}", method="DELETE")
    assert (services.state / "labels" / "labels.parquet").exists()


def test_pipeline_runs_through_the_services(services):
    """The pipeline deployment: its runs in the Prefect server, features on the external Dask
    workers, the model registered in the PostgreSQL-backed MLflow and promoted to champion,
    artifacts on the evaluate and promote runs."""
    from distributed import Client
    from mlflow import MlflowClient

    done = _prefect_cli(services, "deployment", "run", "pipeline/on-demand", "--watch", "--watch-timeout", "400",
                        timeout=450)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    pipeline_run = _runs(services.api, _deployment(services.api, "pipeline/on-demand")["id"])[0]
    assert pipeline_run["state_type"] == "COMPLETED"
    children = _api(services.api, "/flow_runs/filter",
                    {"flow_runs": {"parent_flow_run_id": {"any_": [pipeline_run["id"]]}}, "limit": 50})
    flows = {_api(services.api, f"/flows/{run['flow_id']}")["name"]: run["state_type"] for run in children}
    assert {"ingest", "features", "labels", "melody", "train", "personal", "promote", "index", "evaluate"} <= set(flows)
    assert set(flows.values()) == {"COMPLETED"}
    assert _run_count(services.state) == 40  # the default scale again

    with Client(services.env["CHORUS_COMPUTE__ADDRESS"], set_as_default=False, timeout=30,
                security=_dask_security(services.env)) as client:
        prefixes = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
        assert "extract_track_or_problem" in prefixes, prefixes
        assert len(client.scheduler_info(n_workers=-1)["workers"]) == 2

    decisions = (services.state / "audit" / "promotions.jsonl").read_text()
    champion = MlflowClient(services.mlflow).get_registered_model("chorus-style").aliases.get("champion")
    assert champion == "1", decisions
    import psycopg2

    password = (services.state / "services" / "secrets" / "postgres.password").read_text()
    with psycopg2.connect(host="127.0.0.1", port=services.postgres_port, user="postgres", password=password,
                          dbname="mlflow") as db, \
            db.cursor() as cursor:
        cursor.execute("SELECT name, alias, version FROM registered_model_aliases")
        assert ("chorus-style", "champion", 1) in cursor.fetchall()  # the registry lives in PostgreSQL
    db.close()

    artifacts = _api(services.api, "/artifacts/filter", {"limit": 50})
    keys = {a["key"] for a in artifacts}
    assert {"evaluation", "promotion", "evaluation-table", "promotion-table"} <= keys
    evaluation = next(a for a in artifacts if a["key"] == "evaluation")
    assert "report.html" in evaluation["data"]


def test_services_killed_mid_run_fail_naming_them_and_the_same_command_completes(services, tmp_path):
    """The Dask scheduler (TLS) killed during `chorus features` and PostgreSQL behind MLflow during
    `chorus train`: each run fails with one error line naming the service and its address, within
    the clients' retry policy; after `chorus services up` the same command completes, and its
    outputs equal an undisturbed run's (the shards row for row; one registered version, its metrics
    those of the undisturbed version). The Prefect server and MLflow killed the same way are rows
    of `chorus bench faults`; here their errors are covered by tests/test_outage.py against closed
    ports, which costs seconds instead of minutes."""
    from chorus_bench.service_faults import LocalServicesClient, run_service_faults

    rows = run_service_faults(LocalServicesClient(services.base, services.state, services.root), tmp_path,
                              services=("dask-scheduler", "postgres"))
    assert [row["fault"] for row in rows] == ["dask-scheduler_killed_during_features", "postgres_killed_during_train"]
    print(json.dumps({"faults": rows}))  # the fault table's rows (pytest -s shows them)
    for row in rows:
        assert row["survived"], row
        assert row["fail_seconds"] < 60, row  # the clients' retries (5 s here), not their defaults (minutes)
    services.env = _read_env(services.state)


def test_rotated_credentials_replace_the_old_ones(services):
    """`chorus services rotate`: new passwords, auth string and certificates while the services
    run; the old ones are refused, the new chorus.env works (the tier goes on with it)."""
    import psycopg2
    from mlflow import MlflowClient

    old = dict(services.env)
    old_password = (services.state / "services" / "secrets" / "postgres.password").read_text()
    done = run_chorus(*services.base, "services", "rotate", cwd=services.root, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert old["PREFECT_API_AUTH_STRING"] not in done.stdout and old["MLFLOW_TRACKING_PASSWORD"] not in done.stdout
    services.env = _read_env(services.state)
    assert services.env["PREFECT_API_AUTH_STRING"] != old["PREFECT_API_AUTH_STRING"]
    stale = {"Content-Type": "application/json",
             "Authorization": "Basic " + base64.b64encode(old["PREFECT_API_AUTH_STRING"].encode()).decode()}
    with pytest.raises(urllib.error.HTTPError, match="401"):
        urllib.request.urlopen(urllib.request.Request(f"{services.api}/deployments/filter", data=b"{}", headers=stale))
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(host="127.0.0.1", port=services.postgres_port, user="postgres", password=old_password,
                         dbname="mlflow", connect_timeout=5)
    assert _deployment(services.api, "ingest/on-demand")["name"] == "on-demand"
    assert MlflowClient(services.mlflow).get_registered_model("chorus-style").aliases.get("champion") == "1"


def test_a_failed_run_is_recorded_and_a_run_cannot_point_the_server_elsewhere(services):
    """A run started through the API with a server-only setting (here the tracking URI) fails,
    saying which setting is the server's, and lands in <state>/audit/failures.jsonl."""
    settings = json.dumps({"mlflow_tracking_uri": "http://127.0.0.1:9"})
    done = _prefect_cli(services, "deployment", "run", "ingest/on-demand", "-p", f"settings={settings}",
                        "--watch", "--watch-timeout", "120")
    assert done.returncode != 0
    failures = [json.loads(line) for line in (services.state / "audit" / "failures.jsonl").read_text().splitlines()]
    assert failures[-1]["flow"] == "ingest" and failures[-1]["state"] == "Failed"
    assert "mlflow_tracking_uri" in failures[-1]["message"] and "the server's to set" in failures[-1]["message"]


def test_deployment_runs_read_write_and_promote_only_within_the_servers_bounds(services):
    """Runs started through the API, each with one forbidden parameter: an input outside the
    server's import roots (a file to tag, a search query, a manifest), an output over the
    pipeline's labels table, a forced promotion. Each fails naming the path or setting and the
    rule, its audit record echoes nothing of the file, and the labels table is untouched."""
    imports = services.root / "imports"
    imports.mkdir(exist_ok=True)
    song = imports / "song.wav"
    sf.write(song, 0.1 * np.sin(2 * np.pi * 440 * np.arange(22050 * 3) / 22050), 22050)
    labels = services.state / "labels" / "labels.parquet"
    before = labels.read_bytes() if labels.exists() else None
    hostile = {
        ("tag/on-demand", "paths"): ({"paths": ["/etc/passwd"]}, "/etc/passwd: a deployment run reads only under"),
        ("search/on-demand", "queries"): ({"queries": ["/etc/passwd"]}, "/etc/passwd: a deployment run reads only under"),
        ("ingest/on-demand", "manifest"): ({"settings": {"ingest": {"manifest": "/etc/passwd"}}},
                                           "only under the server's orchestration.import_roots"),
        ("tag/on-demand", "out"): ({"paths": [str(song)], "out": str(labels)}, "outside where chorus may write"),
        ("promote/on-demand", "force"): ({"settings": {"promote": {"force": True}}}, "the server's to set"),
    }
    started = {}
    for (deployment, what), (parameters, _) in hostile.items():
        run = _api(services.api, f"/deployments/{_deployment(services.api, deployment)['id']}/create_flow_run",
                   {"parameters": parameters, "name": f"hostile-{what}"})
        started[run["id"]] = (deployment, what)
    deadline = time.monotonic() + 300
    while True:
        runs = {run_id: _api(services.api, f"/flow_runs/{run_id}") for run_id in started}
        if all(run["state_type"] in ("FAILED", "CRASHED", "COMPLETED") for run in runs.values()) \
                or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert {started[i]: run["state_type"] for i, run in runs.items()} == {key: "FAILED" for key in hostile}
    audited = [json.loads(line) for line in (services.state / "audit" / "failures.jsonl").read_text().splitlines()]
    by_run = {record.get("flow_run_id"): record["message"] for record in audited}
    passwd_line = Path("/etc/passwd").read_text().splitlines()[0]
    for run_id, key in started.items():
        message = by_run[run_id]
        assert hostile[key][1] in message, (key, message)
        assert passwd_line not in message, key
    assert (labels.read_bytes() if labels.exists() else None) == before


def test_prefect_ui_custom_run_and_mlflow_ui_champion(services):
    """Headless Chromium fills the ingest deployment's custom-run form (demo_scale 0.25) and
    submits it; the API shows the run completed with that parameter. Then the MLflow UI shows
    chorus-style with its champion alias."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: `make test` installs it (infra/local/install-system-packages.sh --test)"
    deployment = _deployment(services.api, "ingest/on-demand")
    before = {run["id"] for run in _runs(services.api, deployment["id"])}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium,
                                    args=["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.goto(f"{services.ui}/deployments/deployment/{deployment['id']}", wait_until="networkidle")
        # the UI asks for the API's auth string first, then goes where it was sent
        page.get_by_placeholder("admin:pass").fill(services.env["PREFECT_API_AUTH_STRING"])
        page.get_by_role("button", name="Login").click()
        page.wait_for_url(lambda url: "/login" not in url, timeout=30_000)
        page.wait_for_load_state("networkidle")
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_text("Custom run").click()
        page.get_by_text("demo_scale (Optional)").wait_for()
        page.get_by_text("float", exact=True).click()  # the parameter's type switch: None -> float
        page.get_by_role("spinbutton").fill("0.25")
        page.get_by_role("button", name="Submit").click()

        deadline = time.monotonic() + 240
        while True:
            new = [run for run in _runs(services.api, deployment["id"]) if run["id"] not in before]
            if new and new[0]["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            assert time.monotonic() < deadline, f"the UI-triggered run did not finish: {new}"
            time.sleep(2)
        assert new[0]["state_type"] == "COMPLETED" and new[0]["parameters"]["demo_scale"] == 0.25
        assert _run_count(services.state) == 2 * 5  # 20 * 0.25 tracks per style

        page = browser.new_context(http_credentials={"username": services.env["MLFLOW_TRACKING_USERNAME"],
                                                     "password": services.env["MLFLOW_TRACKING_PASSWORD"]}).new_page()
        page.goto(f"{services.mlflow}/#/models")
        # MLflow's registry page opens with an announcement of its new UI (the one showing aliases)
        page.get_by_role("button", name="Try it now").click()
        page.get_by_role("link", name="chorus-style").click()
        page.get_by_text(re.compile(r"@\s*champion")).first.wait_for(timeout=60_000)
        browser.close()


def test_work_pool_route(services):
    """prefect.yaml through a process worker: with `chorus serve` stopped, `prefect deploy` one
    deployment to the `chorus` pool, run it with a parameter, and a worker started once runs it."""
    stopped = run_chorus(*services.base, "services", "down", "serve", cwd=services.root, timeout=120)
    assert stopped.returncode == 0 and "serve: stopped" in stopped.stderr, stopped.stderr[-2000:]
    repository = Path(__file__).resolve().parents[1]
    env = {**os.environ, **services.env,
           "CHORUS_CONFIG": str(services.state / "services" / "settings.yaml")}  # the tier's small corpus

    def prefect(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([PREFECT, *args], capture_output=True, text=True, env=env, cwd=repository, timeout=timeout)
        assert done.returncode == 0, f"prefect {' '.join(args)}: {done.stdout[-2000:]} {done.stderr[-2000:]}"
        return done

    prefect("work-pool", "create", "chorus", "--type", "process", "--overwrite")
    prefect("--no-prompt", "deploy", "--name", "ingest/on-demand")
    deployment = _deployment(services.api, "ingest/on-demand")
    assert deployment["work_pool_name"] == "chorus"
    prefect("deployment", "run", "ingest/on-demand", "-p", "demo_scale=0.5")
    prefect("worker", "start", "--pool", "chorus", "--run-once", timeout=300)
    run = _runs(services.api, deployment["id"])[0]
    assert run["state_type"] == "COMPLETED" and run["parameters"]["demo_scale"] == 0.5, run["state_name"]
    assert _run_count(services.state) == 2 * 10


def test_services_stop_cleanly(services):
    """`services down`: serve and the workers first, PostgreSQL last; no process is left."""
    pids = {p.stem: int(p.read_text()) for p in (services.state / "services" / "run").glob("*.pid")}
    assert len(pids) == 5  # mlflow, prefect-server, dask-scheduler, 2 workers (serve stopped above); each leads its group
    postmaster = services.state / "services" / "postgres" / "data" / "postmaster.pid"
    postgres = int(postmaster.read_text().splitlines()[0])
    down = run_chorus(*services.base, "services", "down", cwd=services.root, timeout=180)
    assert down.returncode == 0, down.stderr[-3000:]
    order = re.findall(r"^(\S+): stopped", down.stderr, re.M)
    assert order.index("dask-worker-0") < order.index("dask-scheduler") < order.index("prefect-server") < order.index("postgres")
    deadline = time.monotonic() + 10  # pg_ctl returns once the pid file is gone; the postmaster exits just after
    while time.monotonic() < deadline and (Path(f"/proc/{postgres}").exists() or any(map(_group_alive, pids.values()))):
        time.sleep(0.2)
    alive = {name: pgid for name, pgid in pids.items() if _group_alive(pgid)}
    assert not alive, f"left running: {alive}"
    assert not Path(f"/proc/{postgres}").exists(), "postgres is still running"


def _group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is left in the group (a service and its children)."""
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
