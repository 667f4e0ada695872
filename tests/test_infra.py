"""The production infra files, which cannot run here (no Docker engine, no cluster), checked
against the published schemas: the compose file against compose-spec, the Kubernetes manifests
against Kubernetes' own schemas (the DaskCluster against the dask-kubernetes operator's CRD), the
CHORUS_* variables they set against the settings model, and prefect.yaml against the deployments
`chorus serve` defines."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from chorus.config import ChorusSettings
from chorus_ops.environment import settings_env_name, settings_env_names
from chorus_ops.services import Endpoints

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "infra" / "compose" / "compose.yaml"
K8S = sorted((ROOT / "infra" / "k8s").glob("*.yaml"))
KUBERNETES_VERSION = "1.33.0"
# What every production process must be told: where the state, the MLflow server and Dask are.
POINTERS = {settings_env_name("state_dir"), settings_env_name("mlflow_tracking_uri"),
            settings_env_name("compute", "address"), settings_env_name("prefect_api_url")}


def _k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, doc) for path in K8S for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_compose_file_matches_the_compose_spec():
    checker = Path(sys.executable).parent / "check-jsonschema"
    done = subprocess.run([str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    # the production form: Prefect + PostgreSQL, MLflow + PostgreSQL + object store, Dask, a Prefect worker
    assert {"prefect-server", "prefect-db", "mlflow", "mlflow-db", "object-store", "dask-scheduler", "dask-worker",
            "prefect-worker"} <= set(services)


def test_compose_spec_check_can_fail(tmp_path):
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  web:\n    image: nginx\n    ports: 80\n    restart: sometimes\n")
    checker = Path(sys.executable).parent / "check-jsonschema"
    done = subprocess.run([str(checker), "--builtin-schema", "vendor.compose-spec", str(broken)], capture_output=True, text=True)
    assert done.returncode != 0


@pytest.mark.parametrize("name,doc", _k8s_documents(), ids=lambda v: v if isinstance(v, str) else v.get("kind", "?"))
def test_kubernetes_manifests_match_their_schemas(name, doc):
    if doc["apiVersion"].startswith("kubernetes.dask.org/"):
        crd = yaml.safe_load((ROOT / "infra" / "k8s" / "crds" / "daskcluster.yaml").read_text())
        assert doc["kind"] == crd["spec"]["names"]["kind"]
        version = doc["apiVersion"].split("/")[1]
        schema = next(v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == version)
        jsonschema.validate(doc, schema)
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kubernetes_validation_can_fail():
    deployment = next(doc for _, doc in _k8s_documents() if doc["kind"] == "Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replicas": "one"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    cluster = next(doc for _, doc in _k8s_documents() if doc["kind"] == "DaskCluster")
    broken = {**cluster, "spec": {**cluster["spec"], "worker": {**cluster["spec"]["worker"], "replicas": "four"}}}
    with pytest.raises(jsonschema.ValidationError):
        test_kubernetes_manifests_match_their_schemas("dask-cluster.yaml", broken)


def _chorus_variables_in_compose() -> dict[str, set[str]]:
    compose = yaml.safe_load(COMPOSE.read_text())
    out = {}
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        out[name] = {k for k in (env if isinstance(env, dict) else [e.split("=")[0] for e in env]) if k.startswith("CHORUS_")}
    return out


def _chorus_variables_in_k8s() -> dict[str, set[str]]:
    out = {}
    for _, doc in _k8s_documents():
        if doc["kind"] == "ConfigMap":
            out[doc["metadata"]["name"]] = {k for k in doc["data"] if k.startswith("CHORUS_")}
        for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            out[f"{doc['metadata']['name']}/{container['name']}"] = {
                e["name"] for e in container.get("env", []) if e["name"].startswith("CHORUS_")}
    return out


def test_infra_sets_only_variables_the_settings_model_reads():
    known = settings_env_names()
    assert "CHORUS_COMPUTE__ADRESS" not in known  # a misspelling is caught
    for where, found in [("compose", _chorus_variables_in_compose()), ("k8s", _chorus_variables_in_k8s())]:
        unknown = {f"{service}: {name}" for service, names in found.items() for name in names - known}
        assert not unknown, f"{where} sets variables no setting reads: {sorted(unknown)}"
    # the processes that run flows and extract features are pointed at every service
    compose = _chorus_variables_in_compose()
    assert POINTERS <= compose["prefect-worker"] and POINTERS <= compose["dask-worker"]
    assert POINTERS <= _chorus_variables_in_k8s()["chorus-settings"]
    # and the local services write the same names
    local = Endpoints(ChorusSettings().services, Path("/tmp")).chorus_environment()
    assert set(local) <= known


def test_prefect_yaml_defines_the_served_deployments():
    """The work-pool route (prefect.yaml) and `chorus serve` define the same deployments, with
    the default schedules of the settings."""
    from chorus_ops.deployments import deployments

    served = {(d.flow_name, d.name): d for d in deployments(ChorusSettings())}
    project = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    declared = {}
    for entry in project["deployments"]:
        path, function = entry["entrypoint"].split(":")
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), function)
        declared[(flow.name, entry["name"])] = entry
    assert set(declared) == set(served)
    for key, entry in declared.items():
        deployment = served[key]
        assert (entry.get("parameters") or {}) == (deployment.parameters or {}), key
        assert entry["concurrency_limit"]["limit"] == 1 and entry["work_pool"]["name"] == "chorus"
        schedules = [(s["cron"], s["timezone"]) for s in entry.get("schedules", [])]
        assert schedules == [(s.schedule.cron, s.schedule.timezone) for s in deployment.schedules], key


# -- locked by default -------------------------------------------------------------------------
SECRET_WORDS = ("PASSWORD", "SECRET", "ACCESS_KEY", "AUTH_STRING", "TOKEN")
REQUIRED_VARIABLE = r"\$\{[A-Z0-9_]+:\?[^}]*\}"  # ${NAME:?message}: compose refuses to start without it


def _compose_services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_compose_publishes_on_loopback_and_keeps_no_secret():
    import re

    services = _compose_services()
    declared = yaml.safe_load(COMPOSE.read_text())["secrets"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("${CHORUS_BIND_ADDRESS:-127.0.0.1}:"), f"{name} publishes {port} on every interface"
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        env = service.get("environment") or {}
        for key, value in env.items():
            if any(word in key for word in SECRET_WORDS) or "://" in str(value) and "@" in str(value):
                # a secret is only ever the path of a mounted secret file (docker inspect shows environments)
                assert key.endswith("_FILE") and str(value).startswith("/run/secrets/"), f"{name}: {key}={value}"
        command = " ".join(map(str, service.get("command") or []))
        assert not re.search(r"://[^/\s]*:[^@\s$]+@", command.replace("$$(cat", "")), f"{name}: a password on its command line"
        for secret in service.get("secrets", []):
            assert secret in declared and declared[secret]["file"].startswith("./secrets/"), (name, secret)
    text = COMPOSE.read_text()
    for default in ("change-me", "chorus-secret", ":-prefect}", ":-mlflow}", "password1234"):
        assert default not in text
    assert not re.findall(r"\$\{(?!CHORUS_BIND_ADDRESS)[A-Z0-9_]+", text)  # no secret comes from .env or the shell
    made = (COMPOSE.parent / "make-secrets.sh").read_text()
    for secret in declared:  # make-secrets.sh writes every file the compose file mounts
        assert re.search(rf"\b{re.escape(secret)}\b", made), secret


def test_compose_hardens_mlflow_dask_and_the_object_store():
    services = _compose_services()
    mlflow = services["mlflow"]
    started = " ".join(mlflow["command"])
    assert "--app-name basic-auth" in started and "default_permission = NO_PERMISSIONS" in started
    assert "--backend-store-uri" not in started and "MLFLOW_BACKEND_STORE_URI=" in started  # from the secret, not argv
    # MLflow's object-store key is its own, scoped to its bucket; the root key stays with MinIO and create-bucket
    assert not {"s3_root_user", "s3_root_password"} & set(mlflow["secrets"])
    assert {"mlflow_s3_access_key", "mlflow_s3_secret_key"} <= set(mlflow["secrets"])
    bucket = " ".join(services["create-bucket"]["command"])
    assert "mc admin policy attach store mlflow-bucket" in bucket and "arn:aws:s3:::mlflow/*" in bucket
    holders = {name for name, service in services.items() if set(service.get("secrets", [])) & {"s3_root_user", "s3_root_password"}}
    assert holders == {"object-store", "create-bucket"}
    # Dask: TLS everywhere, the dashboard unpublished, the client certificate only where chorus runs
    scheduler, worker = services["dask-scheduler"], services["dask-worker"]
    assert "--protocol" in scheduler["command"] and scheduler["command"][scheduler["command"].index("--protocol") + 1] == "tls"
    assert "--no-dashboard" in scheduler["command"] and not scheduler.get("ports")
    assert worker["command"][2].startswith("tls://") and "--tls-cert" in worker["command"]
    assert services["prefect-worker"]["environment"]["CHORUS_COMPUTE__ADDRESS"].startswith("tls://")
    client_holders = {name for name, service in services.items() if "dask_client.key" in service.get("secrets", [])}
    node_holders = {name for name, service in services.items() if "dask_node.key" in service.get("secrets", [])}
    assert client_holders == {"prefect-worker"} and node_holders == {"dask-scheduler", "dask-worker"}
    for name in ("mlflow", "prefect-server", "mlflow-db", "prefect-db", "object-store"):
        assert not any(secret.startswith("dask_") for secret in services[name].get("secrets", [])), name


def test_make_secrets_issues_certificates_a_dask_scheduler_accepts_only_from_its_clients(tmp_path):
    import asyncio
    import shutil

    from distributed import Client, Scheduler
    from distributed.security import Security

    for name in ("compose", "elsewhere"):  # this deployment's secrets, and another's
        (tmp_path / name).mkdir()
        shutil.copy(COMPOSE.parent / "make-secrets.sh", tmp_path / name)
        subprocess.run(["sh", str(tmp_path / name / "make-secrets.sh")], check=True, capture_output=True)
    secrets, other = tmp_path / "compose" / "secrets", tmp_path / "elsewhere" / "secrets"
    assert oct(secrets.stat().st_mode & 0o777) == "0o700"
    ca, node_cert, node_key = (str(secrets / n) for n in ("dask_ca.pem", "dask_node.pem", "dask_node.key"))
    client_cert, client_key = str(secrets / "dask_client.pem"), str(secrets / "dask_client.key")

    async def connect() -> tuple[bool, bool]:
        server = Security(tls_ca_file=ca, tls_scheduler_cert=node_cert, tls_scheduler_key=node_key, require_encryption=True)
        async with Scheduler(host="127.0.0.1", port=0, protocol="tls", security=server, dashboard_address=None) as scheduler:
            chorus = Security(tls_ca_file=ca, tls_client_cert=client_cert, tls_client_key=client_key, require_encryption=True)
            async with Client(scheduler.address, asynchronous=True, security=chorus, timeout=10) as client:
                accepted = (await client.scheduler.identity())["address"] == scheduler.address
            # a client certificate another deployment's CA signed
            stranger = Security(tls_ca_file=ca, tls_client_cert=str(other / "dask_client.pem"),
                                tls_client_key=str(other / "dask_client.key"), require_encryption=True)
            try:
                async with Client(scheduler.address, asynchronous=True, security=stranger, timeout=3):
                    refused = False
            except (OSError, TimeoutError):
                refused = True
            return accepted, refused

    assert asyncio.run(connect()) == (True, True)


def _pod_specs() -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for _, doc in _k8s_documents():
        if doc["kind"] == "DaskCluster":
            specs += [(f"DaskCluster/{part}", doc["spec"][part]["spec"]) for part in ("worker", "scheduler")]
        elif "template" in doc.get("spec", {}):
            specs.append((f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]))
    return specs


def test_every_kubernetes_container_runs_unprivileged_and_no_secret_is_applied():
    specs = _pod_specs()
    assert {name for name, _ in specs} >= {"Deployment/mlflow", "Deployment/prefect-worker", "DaskCluster/worker",
                                           "DaskCluster/scheduler"}
    for name, spec in specs:
        pod = spec.get("securityContext", {})
        for container in spec["containers"]:
            context = container.get("securityContext", {})
            where = f"{name}/{container['name']}"
            assert context.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, where
            assert context.get("runAsUser", pod.get("runAsUser", 0)) != 0, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("readOnlyRootFilesystem") is True, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where
    secrets = [doc for _, doc in _k8s_documents() if doc["kind"] == "Secret"]
    assert not [s for s in secrets if s.get("data") or s.get("stringData")], "a Secret with values would overwrite the real one"


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_a_network_policy_guards_every_service():
    documents = [doc for _, doc in _k8s_documents()]
    policies = [doc for doc in documents if doc["kind"] == "NetworkPolicy"]
    assert any(p["spec"]["podSelector"] == {} and p["spec"]["policyTypes"] == ["Ingress"] and not p["spec"].get("ingress")
               for p in policies), "no default deny"
    guarded = [p["spec"]["podSelector"].get("matchLabels", {}) for p in policies if p["spec"]["podSelector"]]
    services = {doc["metadata"]["name"]: doc["spec"]["selector"] for doc in documents if doc["kind"] == "Service"}
    cluster = next(doc for doc in documents if doc["kind"] == "DaskCluster")
    services["dask-scheduler"] = cluster["spec"]["scheduler"]["service"]["selector"]
    services["mlflow-db"] = {"app.kubernetes.io/name": "postgres"}
    for name, selector in services.items():
        assert any(_selects(g, selector) for g in guarded), f"no NetworkPolicy for {name}"
    # only MLflow reaches its database; only the Prefect worker and Dask's own pods reach the scheduler
    by_name = {p["metadata"]["name"]: p for p in policies}
    sources = [peer["podSelector"]["matchLabels"] for rule in by_name["mlflow-db"]["spec"]["ingress"] for peer in rule["from"]]
    assert sources == [{"app.kubernetes.io/name": "mlflow"}]
    scheduler_port = [rule for rule in by_name["dask-scheduler"]["spec"]["ingress"] if {"protocol": "TCP", "port": 8786} in rule["ports"]]
    allowed = [peer["podSelector"]["matchLabels"] for rule in scheduler_port for peer in rule["from"]]
    assert allowed == [{"app.kubernetes.io/name": "prefect-worker"}, {"dask.org/cluster-name": "chorus", "dask.org/component": "worker"}]


def test_the_image_runs_as_an_unprivileged_user():
    lines = [line.split() for line in (ROOT / "infra" / "docker" / "Dockerfile").read_text().splitlines()]
    users = [line[1] for line in lines if line and line[0] == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")


@pytest.mark.skipif(os.geteuid() != 0, reason="the services' users are made only when chorus services starts as root")
def test_local_services_keep_the_schedulers_key_from_mlflow_and_prefects_user():
    """`chorus services` started as root: MLflow's and Prefect's user (services.run_as) holds no
    Dask key and cannot read the scheduler's, which runs code on the workers. The scheduler on its
    copies, a worker on its certificate and chorus's client on its own run a task together."""
    import asyncio
    import pwd

    from distributed import Client, Scheduler, Worker
    from distributed.security import Security

    from chorus_ops.services import LocalServices

    base = Path(tempfile.mkdtemp(prefix="chorus-services-"))  # pytest's tmp_path is root's alone: no user reaches it
    try:
        base.chmod(0o711)
        services = LocalServices(ChorusSettings(state_dir=base / "state"))
        services.secrets.ensure("127.0.0.1", 5433, services.mlflow_auth_db, "127.0.0.1")
        services._prepare_server_files(lambda line: None)
        run_as, dask_run_as = services.settings.run_as, services.settings.dask_run_as
        assert sorted(p.name for p in services.server_files.iterdir()) == ["mlflow-auth.ini", "pgpass"]
        scheduler_key = services.scheduler_files / "dask-scheduler.key"
        assert pwd.getpwuid(scheduler_key.stat().st_uid).pw_name == dask_run_as
        reads = {user: subprocess.run(["cat", str(scheduler_key)], user=user, group=user, extra_groups=[],
                                      capture_output=True, text=True) for user in (run_as, dask_run_as)}
        assert reads[run_as].returncode != 0 and "Permission denied" in reads[run_as].stderr
        assert reads[dask_run_as].returncode == 0 and "PRIVATE KEY" in reads[dask_run_as].stdout

        scheduler_argv = next(s.argv for s in services.services() if s.name == "dask-scheduler")
        ca, cert, key = (scheduler_argv[scheduler_argv.index(flag) + 1] for flag in ("--tls-ca-file", "--tls-cert", "--tls-key"))
        assert Path(key) == scheduler_key
        worker_cert, worker_key = services.secrets.dask_certificate("worker")
        env = services.client_environment()

        async def run() -> int:
            async with Scheduler(host="127.0.0.1", port=0, protocol="tls", dashboard_address=None, security=Security(
                    tls_ca_file=ca, tls_scheduler_cert=cert, tls_scheduler_key=key, require_encryption=True)) as scheduler, \
                    Worker(scheduler.address, nthreads=1, host="127.0.0.1", security=Security(
                        tls_ca_file=ca, tls_worker_cert=str(worker_cert), tls_worker_key=str(worker_key),
                        require_encryption=True)):
                chorus = Security(tls_ca_file=env["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"],
                                  tls_client_cert=env["DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT"],
                                  tls_client_key=env["DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY"], require_encryption=True)
                async with Client(scheduler.address, asynchronous=True, security=chorus, timeout=10) as client:
                    return int(await client.submit(sum, [20, 22]))
        assert asyncio.run(run()) == 42
    finally:
        shutil.rmtree(base)
