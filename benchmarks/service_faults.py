"""Services killed in the middle of a run: the Dask scheduler and the Prefect server during
`chorus features`, MLflow and its PostgreSQL store during `chorus train`. Each run must fail with
one error line naming the service and its address; after `chorus services up` the same command
must complete, and its outputs equal an undisturbed run's (the feature shards row for row; one
registered version whose metrics equal the undisturbed version's).

``run_service_faults`` works on local services already up and a corpus already ingested (the
service tier's fixture); ``run`` starts them on a small demo corpus, for `chorus bench faults`.
One fault-table row per service.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

# a small corpus of two styles (the service tier's); the MFCC + SVM baseline trains in seconds
DEMO = {"styles": ["bach", "essenFolksong"], "tracks_per_style": 20, "clip_seconds": 5.0, "measures": 6, "users": 24,
        "communities": 2, "workers": 2}
# a client gives up on a silent service after this many seconds of retries (Dask: its connect
# timeout; Prefect: two retries, 2 + 4 s, where its default five wait about a minute)
WAIT_S = 5
# a feature configuration of its own (every shard is extracted again), in shards of two tracks: a
# run long enough to be killed in
FEATURES = ("features.n_mfcc=16", "features.shard_size=2")
TRAIN = ("train.seed=3", "train.svm.budget=40")  # a training of its own


@dataclass
class LocalServicesClient:
    """How a chorus command reaches local services: its options (--config, --state-dir), the
    state directory, and chorus.env's exports."""

    options: tuple[str, ...]
    state: Path
    cwd: Path

    @property
    def env(self) -> dict[str, str]:
        text = (self.state / "services" / "chorus.env").read_text()
        return {name: shlex.split(value)[0] for name, value in re.findall(r"^export (\w+)=(.*)$", text, re.M)}

    def start(self, log: Path, command: str, *sets: str) -> subprocess.Popen[bytes]:
        """``chorus -v COMMAND`` pointed at the services, its terminal into ``log``."""
        env = {**os.environ, **self.env, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": f"{WAIT_S}s",
               "PREFECT_CLIENT_MAX_RETRIES": "2", "PYTHONUNBUFFERED": "1"}
        flags = [x for s in (f"orchestration.service_wait_s={WAIT_S}", *sets) for x in ("--set", s)]
        with log.open("wb") as out:
            return subprocess.Popen([sys.executable, "-m", "chorus_ops", *self.options, *flags, "-v", command],
                                    stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.cwd)

    def run(self, log: Path, command: str, *sets: str) -> None:
        process = self.start(log, command, *sets)
        if process.wait(timeout=900) != 0:
            raise RuntimeError(f"chorus {command} failed:\n{log.read_text(errors='replace')[-4000:]}")

    def services(self, action: str) -> None:
        done = subprocess.run([sys.executable, "-m", "chorus_ops", *self.options, "services", action],
                              capture_output=True, text=True, cwd=self.cwd, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"chorus services {action} failed:\n{done.stderr[-4000:]}")

    def kill(self, service: str) -> None:
        """SIGKILL to the service's process group; PostgreSQL: SIGQUIT to the postmaster (its
        immediate shutdown, recovered from on the next start)."""
        if service == "postgres":
            postmaster = self.state / "services" / "postgres" / "data" / "postmaster.pid"
            os.kill(int(postmaster.read_text().splitlines()[0]), signal.SIGQUIT)
        else:
            os.killpg(int((self.state / "services" / "run" / f"{service}.pid").read_text()), signal.SIGKILL)


def wait_for_line(log: Path, process: subprocess.Popen[bytes], marker: str, timeout: float = 600) -> None:
    """Wait until ``marker`` is in the log ``process`` writes (an error if it ends first)."""
    deadline = time.monotonic() + timeout
    while marker not in log.read_text(errors="replace"):
        if process.poll() is not None:
            raise RuntimeError(f"the run ended before {marker!r}:\n{log.read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{marker!r} not logged within {timeout:.0f} s")
        time.sleep(0.2)


def _error_lines(log: Path) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines() if line.startswith("error:")]


def _shards(folder: Path) -> pd.DataFrame:
    frame = pd.concat([pd.read_parquet(s) for s in sorted(folder.glob("shard-*.parquet"))], ignore_index=True)
    return frame.sort_values(["track_id", *[c for c in frame.columns if c.startswith("segment")][:1]]).reset_index(drop=True)


def _versions(client: LocalServicesClient, name: str, seed: int) -> list[dict[str, float]]:
    """The metrics of each registered version of ``name`` trained with ``seed`` (timings left out)."""
    os.environ.update({k: v for k, v in client.env.items() if k.startswith("MLFLOW_TRACKING_")})
    from mlflow import MlflowClient

    mlflow = MlflowClient(client.env["MLFLOW_TRACKING_URI"])
    out = []
    for version in mlflow.search_model_versions(f"name='{name}'"):
        run = mlflow.get_run(version.run_id)
        if run.data.params.get("train.seed") == str(seed):
            out.append({k: v for k, v in run.data.metrics.items() if "second" not in k and "time" not in k})
    return out


def _disturbed(client: LocalServicesClient, workdir: Path, service: str, marker: str, command: str,
               sets: tuple[str, ...]) -> dict[str, Any]:
    """Run, kill ``service`` once ``marker`` is logged, restart it, run again: what was said, how
    long the run took to fail after the kill, and the kill to the rerun's end."""
    log = workdir / f"{service}.log"
    process = client.start(log, command, *sets)
    wait_for_line(log, process, marker)
    client.kill(service)
    killed = time.monotonic()
    code = process.wait(timeout=600)
    failed_after = time.monotonic() - killed
    client.services("up")
    client.run(workdir / f"{service}-again.log", command, *sets)
    return {"exit_code": code, "said": _error_lines(log), "fail_seconds": round(failed_after, 1),
            "recover_seconds": round(time.monotonic() - killed, 1)}


SERVICES = ("dask-scheduler", "prefect-server", "mlflow", "postgres")


def run_service_faults(client: LocalServicesClient, workdir: Path, log: Callable[[str], None] = print,
                       services: tuple[str, ...] = SERVICES) -> list[dict[str, Any]]:
    """One row per killed service of ``services`` (the fault table's columns, plus what the run
    said); the services must be up and the corpus ingested."""
    env = client.env
    rows: list[dict[str, Any]] = []
    if any(s in services for s in ("dask-scheduler", "prefect-server")):
        _features_faults(client, workdir, log, services, env, rows)
    if any(s in services for s in ("mlflow", "postgres")):
        _train_faults(client, workdir, log, services, env, rows)
    return rows


def _features_faults(client: LocalServicesClient, workdir: Path, log: Callable[[str], None], services: tuple[str, ...],
                     env: dict[str, str], rows: list[dict[str, Any]]) -> None:
    features_root = client.state / "features"
    before = set(features_root.iterdir())
    client.run(workdir / "features-reference.log", "features", *FEATURES)
    [folder] = set(features_root.iterdir()) - before
    reference = _shards(folder)
    # the scheduler before the shards' jobs are all sent (they finish within a second or two of it),
    # the Prefect server once shards are being committed
    for service, name, address, marker in (
            ("dask-scheduler", "Dask scheduler", env["CHORUS_COMPUTE__ADDRESS"], "shards to extract"),
            ("prefect-server", "Prefect server", env["PREFECT_API_URL"], "shard shard-")):
        if service not in services:
            continue
        shutil.rmtree(folder)
        outcome = _disturbed(client, workdir, service, marker, "features", FEATURES)
        again = _shards(folder)
        tracks_in, tracks_out = reference["track_id"].nunique(), again["track_id"].nunique()
        rows.append(_row(f"{service}_killed_during_features", name, address, outcome, tracks_in, tracks_out,
                         lost=len(set(reference["track_id"]) - set(again["track_id"])),
                         duplicated=int(again.duplicated(subset=[c for c in again.columns if c.startswith(("track_id", "segment"))]).sum()),
                         equal=again.equals(reference)))
        log(_line(rows[-1]))


def _train_faults(client: LocalServicesClient, workdir: Path, log: Callable[[str], None], services: tuple[str, ...],
                  env: dict[str, str], rows: list[dict[str, Any]]) -> None:
    client.run(workdir / "train-reference.log", "train", *TRAIN, "train.model_prefix=calm")
    expected = _versions(client, "calm-style", 3)
    local = yaml.safe_load((client.state / "services" / "settings.yaml").read_text())["services"]
    postgres = f"{local['host']}:{local['postgres_port']}"
    for service, name, address, prefix in (("mlflow", "MLflow", env["MLFLOW_TRACKING_URI"], "chorus"),
                                           ("postgres", "PostgreSQL", postgres, "stormy")):
        if service not in services:
            continue
        outcome = _disturbed(client, workdir, service, "Beginning flow run 'train", "train",
                             (*TRAIN, f"train.model_prefix={prefix}"))
        versions = _versions(client, f"{prefix}-style", 3)
        rows.append(_row(f"{service}_killed_during_train", name, address, outcome, 1, len(versions),
                         lost=int(not versions), duplicated=max(0, len(versions) - 1), equal=versions == expected))
        log(_line(rows[-1]))


def _row(fault: str, name: str, address: str | None, outcome: dict[str, Any], records_in: int, records_out: int,
         lost: int, duplicated: int, equal: bool) -> dict[str, Any]:
    said = outcome["said"]
    # exit status 4: a service outage (README, the CLI's exit statuses)
    named = outcome["exit_code"] == 4 and len(said) == 1 and f"{name} at {address or ''}" in said[0] \
        and "is unreachable" in said[0]
    return {"fault": fault, "survived": bool(named and equal and lost == 0 and duplicated == 0),
            "records_in": records_in, "records_out": records_out, "quarantined": 0, "lost": lost,
            "duplicated": duplicated, "recover_seconds": outcome["recover_seconds"],
            "fail_seconds": outcome["fail_seconds"], "said": said[0] if said else "", "equal_to_undisturbed": equal}


def _line(row: dict[str, Any]) -> str:
    return (f"{row['fault']:>40}: {'survived' if row['survived'] else 'NOT SURVIVED'}, failed {row['fail_seconds']} s "
            f"after the kill, recovered in {row['recover_seconds']} s; said: {row['said']}")


def run(log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """The local services started on a small demo corpus in a scratch folder, its corpus ingested,
    ``run_service_faults``, the services stopped."""
    from chorus_ops.postgres import postgres_bin
    from chorus_ops.processes import free_ports

    postgres_bin()  # PostgreSQL is installed (make services-up installs it), or a clear error
    # the postgres user runs the database and must reach its folder
    root = Path(tempfile.mkdtemp(prefix="chorus-service-faults-"))
    root.chmod(0o755)
    prefect_port, mlflow_port, postgres_port, dask_port = free_ports(4)
    config = root / "chorus.yaml"
    config.write_text(yaml.safe_dump({
        "demo": DEMO, "features": {"shard_size": 5},
        "train": {"candidates": ["mfcc_svm_pso"], "svm": {"budget": 12, "particles": 4}},
        "services": {"prefect_port": prefect_port, "mlflow_port": mlflow_port, "postgres_port": postgres_port,
                     "dask_port": dask_port, "dask_dashboard_port": 0, "dask_worker_memory": "2GiB", "serve": False},
    }))
    client = LocalServicesClient(("--config", str(config), "--state-dir", str(root / "state")), root / "state", root)
    try:
        log("starting the local services")
        client.services("up")
        client.run(root / "ingest.log", "ingest")
        # training reads the default feature set and the labels (the service tier's earlier tests made them)
        client.run(root / "features.log", "features")
        client.run(root / "labels.log", "labels")
        return run_service_faults(client, root, log)
    finally:
        try:
            client.services("down")
        finally:
            shutil.rmtree(root, ignore_errors=True)
