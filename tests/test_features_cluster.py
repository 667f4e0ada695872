"""The features flow against a real Dask cluster started as processes (``dask scheduler`` and two
``dask worker``s on 127.0.0.1): a worker killed while it processes a shard's files costs nothing
but time; every track appears exactly once. Also: a broken file is quarantined, the run goes on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chorus.config import load_settings
from chorus.state import StateDir
from chorus_ops.processes import free_ports
from conftest import SR, tone, write_wav

pytestmark = pytest.mark.slow

DASK = str(Path(sys.executable).parent / "dask")


@pytest.fixture
def cluster(tmp_path):
    """A scheduler and two nanny-less workers (so a worker's pid is the process we kill)."""
    from distributed import Client

    port = free_ports(1)[0]
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    logs = tmp_path / "dask-logs"
    logs.mkdir()
    procs = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              stdout=open(logs / "scheduler.log", "w"), stderr=subprocess.STDOUT, env=env)]
    workers = {}
    try:
        client = Client(address, timeout=60, set_as_default=False)
        for name in ("w0", "w1"):
            workers[name] = subprocess.Popen(
                [DASK, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1",
                 "--name", name, "--memory-limit", "2GiB"],
                stdout=open(logs / f"{name}.log", "w"), stderr=subprocess.STDOUT, env=env)
        procs += workers.values()
        client.wait_for_workers(2, timeout=60)
        yield address, client, workers
        client.close()
    finally:
        for proc in reversed(procs):  # workers first, then the scheduler
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _corpus(root: Path, n: int, seconds: float = 10.0, short: int = 0) -> Path:
    rows = []
    for i in range(n):
        length = 2.0 if i < short else seconds
        rng = np.random.default_rng(i)
        y = tone(length, 200 + 37 * i, 0.2) + 0.02 * rng.standard_normal(int(length * SR)).astype(np.float32)
        rows.append({"uri": f"audio/{i:02d}.wav", "label": "a" if i % 2 else "b"})
        write_wav(root / rows[-1]["uri"], y.astype(np.float32))
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def test_killed_worker_shard_is_rescheduled_and_output_is_complete(cluster, tmp_path, prefect_harness):
    from chorus import stages
    from chorus.features import load_features
    from chorus_flows.features import features

    address, client, workers = cluster
    manifest = _corpus(tmp_path / "corpus", 24)
    settings = load_settings(overrides={
        "state_dir": str(tmp_path / "state"),
        "ingest": {"manifest": str(manifest), "min_duration_s": 1.0},
        "features": {"shard_size": 8}, "compute": {"address": address},
    })
    stages.ingest_stage(settings)
    tracks = stages.load_tracks(settings)
    assert len(tracks) == 24

    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.update(summary=features(settings=settings)))
    runner.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and runner.is_alive():
        for worker_address, keys in client.processing().items():
            busy = [k for k in keys if str(k).startswith("extract_track_or_problem")]
            if busy:
                name = client.scheduler_info()["workers"][worker_address]["name"]
                os.kill(workers[name].pid, signal.SIGKILL)
                killed = (name, busy)
                break
        time.sleep(0.01)
    runner.join(timeout=300)
    assert killed is not None, "no worker was seen processing a file"
    assert workers[killed[0]].wait(timeout=10) == -signal.SIGKILL
    summary = outcome["summary"]
    assert summary["counts"]["tracks"] == 24 and summary["counts"]["shards_failed_validation"] == 0

    stored = load_features(StateDir(settings.state_dir).features, settings.features)
    per_track = stored.segments.groupby("track_id")["segment"]
    assert set(per_track.groups) == set(tracks.track_id)  # every track, the killed one's included
    assert not stored.segments.duplicated(["track_id", "segment"]).any()
    assert (per_track.count() == per_track.max() + 1).all()  # segments 0..n-1, none twice, none missing
    # the surviving worker is the one that finished the job
    assert len(client.scheduler_info()["workers"]) == 1

    # a re-run finds everything current and does not touch the cluster
    again = features(settings=settings)
    assert again["skipped"] and again["counts"]["tracks"] == 24


def test_file_failing_extraction_is_quarantined_and_the_run_continues(tmp_path, prefect_harness):
    from chorus import stages
    from chorus_flows.features import features

    # a 2 s file passes ingest (min 1 s) but is shorter than one segment under the reject rule
    manifest = _corpus(tmp_path / "corpus", 3, seconds=4.0, short=1)
    settings = load_settings(overrides={
        "state_dir": str(tmp_path / "state"),
        "ingest": {"manifest": str(manifest), "min_duration_s": 1.0},
        "features": {"shard_size": 2, "short_track": "reject"}, "compute": {"workers": 1},
    })
    stages.ingest_stage(settings)
    summary = features(settings=settings)
    counts = summary["counts"]
    rejected = pd.read_parquet(summary["outputs"]["rejected"])
    assert counts["rejected"] == len(rejected) == 1 and counts["tracks"] == 2
    assert rejected.reason.tolist() == ["too_short_for_segment"]
    assert rejected.uri[0].endswith("audio/00.wav") and "reject" in rejected.detail[0]
    # the rejection is remembered: a re-run neither retries it nor loses it
    again = features(settings=settings)
    assert again["skipped"] and again["counts"]["rejected"] == 1


def test_a_catalogue_of_many_shards_runs_a_few_per_worker_at_a_time(tmp_path, prefect_harness):
    """Each running shard holds a thread of the flow's process and its files' tasks in the
    scheduler, so every shard at once would grow the process with the catalogue: at most four
    shards per worker run at once (Prefect's own task runs say when each ran), and every track
    is extracted."""
    from datetime import datetime, timezone

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName, TaskRunFilterStartTime

    from chorus import stages
    from chorus_flows.features import features

    manifest = _corpus(tmp_path / "corpus", 12, seconds=4.0)
    settings = load_settings(overrides={
        "state_dir": str(tmp_path / "state"),
        "ingest": {"manifest": str(manifest), "min_duration_s": 1.0},
        "features": {"shard_size": 1}, "compute": {"workers": 1},
    })
    stages.ingest_stage(settings)
    started = datetime.now(timezone.utc)
    assert features(settings=settings)["counts"]["tracks"] == 12
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(
            name=TaskRunFilterName(like_="extract-"), start_time=TaskRunFilterStartTime(after_=started)))
    # a shard per track, per feature configuration (musicnn's input is one when a musicnn candidate is selected)
    assert len(runs) == 12 * len(stages.extraction_settings(settings))
    assert all(run.state is not None and run.state.is_completed() for run in runs)
    edges = sorted([(run.start_time, 1) for run in runs] + [(run.end_time, -1) for run in runs], key=lambda e: (e[0], e[1]))
    running, most = 0, 0
    for _, step in edges:
        running += step
        most = max(most, running)
    assert most <= stages.shards_in_flight(settings) == 4
