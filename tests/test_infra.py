"""The production infra files, which cannot run here (no Docker engine, no cluster), checked
against the published schemas: the compose file against compose-spec, the Kubernetes manifests
against Kubernetes' own schemas (the DaskCluster against the dask-kubernetes operator's CRD), the
CHORUS_* variables they set against the settings model, and prefect.yaml against the deployments
`chorus serve` defines."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from chorus.config import ChorusSettings
from chorus_ops.services import Endpoints, settings_env_name, settings_env_names

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "infra" / "compose" / "compose.yaml"
K8S = sorted((ROOT / "infra" / "k8s").glob("*.yaml"))
KUBERNETES_VERSION = "1.33.0"
# What every production process must be told: where the state, the MLflow server and Dask are.
POINTERS = {settings_env_name("state_dir"), settings_env_name("mlflow_tracking_uri"),
            settings_env_name("features", "dask_address"), settings_env_name("prefect_api_url")}


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
    assert "CHORUS_FEATURES__DASK_ADRESS" not in known  # a misspelling is caught
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
