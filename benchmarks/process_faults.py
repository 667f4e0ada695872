"""chorus's own process killed in the middle of a stage: ``chorus labels`` while it votes and
writes the labels table, ``chorus train`` while it trains, logs and registers a model, and a
process saving a search index (the index stage's ``SearchIndex.save``, in a loop) during the swap.

Each stage first runs undisturbed (the reference, and the duration of its flow run, from the
log's "Beginning flow run" to the process's exit). Then, at each point given as a share of that
duration, the same command is started afresh and its whole process group is sent SIGKILL (as an
out-of-memory killer or a lost machine does); what a reader then finds must be whole (the labels
table reads completely or is absent; every READY registered version loads); the same command run
again must complete, and its outputs equal the reference's (the labels table row for row; one
registered version whose metrics equal the reference's). The index swap is killed at random
moments of back-to-back saves (each kill lands inside a save): the index must load whole after
each, a save after it must complete, and ``chorus gc`` must find what the interrupted saves left.
One fault-table row per stage and point.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from chorus.state import StateDir
from chorus_bench.service_faults import wait_for_line

DEMO = {"styles": ["bach", "essenFolksong"], "tracks_per_style": 10, "clip_seconds": 5.0, "measures": 6, "users": 40,
        "communities": 2, "workers": 2}
FLOW_STARTED = "Beginning flow run"
TRAIN = {"candidates": ["mfcc_svm_pso"], "seed": 3, "svm": {"budget": 40, "particles": 4}}


class Workspace:
    """A state directory on the small demo corpus and the ``chorus`` command pointed at it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "chorus.yaml"
        self.config.write_text(yaml.safe_dump({"demo": DEMO, "train": TRAIN}))
        self.state = root / "state"

    def start(self, log: Path, command: str, *sets: str) -> subprocess.Popen[bytes]:
        flags = [x for s in sets for x in ("--set", s)]
        with log.open("wb") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "chorus_ops", "--config", str(self.config), "--state-dir", str(self.state),
                 *flags, "-v", command], stdout=out, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def run(self, log: Path, command: str, *sets: str) -> float:
        """Run ``command`` to its end; the seconds from its flow run's start to its exit."""
        process = self.start(log, command, *sets)
        wait_for_line(log, process, FLOW_STARTED)
        started = time.perf_counter()
        if process.wait(timeout=900) != 0:
            raise RuntimeError(f"chorus {command} failed:\n{log.read_text(errors='replace')[-4000:]}")
        return time.perf_counter() - started


def _labels(state: Path) -> pd.DataFrame | None:
    """The labels table (global, group and personal truths) as a reader finds it, or None."""
    path = StateDir(state).labels_table
    return pd.read_parquet(path) if path.exists() else None


def _versions(state: Path, name: str) -> list[dict[str, Any]]:
    """Each registered version of ``name``: its status, whether its model loads, its metrics (timings
    left out)."""
    import mlflow
    from mlflow import MlflowClient

    from chorus.config import load_settings
    from chorus.registry import configure

    settings = load_settings(overrides={"state_dir": str(state)})
    configure(settings.tracking_uri, StateDir(state).mlflow_artifacts, settings.orchestration.service_wait_s)
    client = MlflowClient()
    out = []
    for version in client.search_model_versions(f"name='{name}'"):
        run = client.get_run(version.run_id)
        try:
            mlflow.pyfunc.load_model(f"models:/{name}/{version.version}")
            loads = True
        except Exception:  # a version a reader cannot use is what this check looks for
            loads = False
        out.append({"status": version.status, "loads": loads,
                    "metrics": {k: v for k, v in run.data.metrics.items() if "second" not in k and "time" not in k}})
    return out


def _kill_at(workspace: Workspace, name: str, command: str, point: float, seconds: float,
             fresh: Callable[[int], tuple[str, ...]]) -> tuple[bool, tuple[str, ...]]:
    """Start ``command`` (with the settings ``fresh(attempt)`` returns, having cleared what an
    earlier attempt wrote) and SIGKILL its process group at ``point`` of its flow run's ``seconds``.
    Runs vary: one that ends first is tried again, at most three times in all, at ``point`` of the
    shortest run seen. Returns whether a run was killed, and its settings."""
    sets: tuple[str, ...] = ()
    for attempt in range(3):
        sets = fresh(attempt)
        log = workspace.root / f"{name}-{attempt}.log"
        process = workspace.start(log, command, *sets)
        wait_for_line(log, process, FLOW_STARTED)
        started = time.perf_counter()
        try:
            process.wait(timeout=point * seconds)
            seconds = min(seconds, time.perf_counter() - started)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return True, sets
    return False, sets


def _row(fault: str, killed: bool, reader_ok: bool, equal: bool, records_in: int, records_out: int, lost: int,
         duplicated: int, recover_seconds: float) -> dict[str, Any]:
    return {"fault": fault, "survived": bool(killed and reader_ok and equal and lost == 0 and duplicated == 0),
            "records_in": records_in, "records_out": records_out, "quarantined": 0, "lost": lost,
            "duplicated": duplicated, "recover_seconds": round(recover_seconds, 1), "killed_mid_run": killed,
            "reader_saw_whole_outputs": reader_ok, "equal_to_undisturbed": equal}


def labels_rows(workspace: Workspace, points: tuple[float, ...], log: Callable[[str], None]) -> list[dict[str, Any]]:
    table = StateDir(workspace.state).labels_table
    table.unlink(missing_ok=True)
    seconds = workspace.run(workspace.root / "labels-reference.log", "labels")
    reference = _labels(workspace.state)
    assert reference is not None
    keys = [c for c in reference.columns if c in ("scope", "group", "user_id", "track_id")]
    rows = []

    def fresh(attempt: int) -> tuple[str, ...]:
        table.unlink(missing_ok=True)
        return ()

    for point in points:
        killed, _ = _kill_at(workspace, f"labels-{point}", "labels", point, seconds, fresh)
        try:
            seen = _labels(workspace.state)  # the whole table or none
            reader_ok = seen is None or seen.equals(reference)
        except Exception:  # a half-written table a reader would take
            reader_ok = False
        started = time.perf_counter()
        workspace.run(workspace.root / f"labels-{point}-again.log", "labels")
        recover = time.perf_counter() - started
        again = _labels(workspace.state)
        assert again is not None
        rows.append(_row(f"process_killed_during_labels_at_{round(point * 100)}pct", killed, reader_ok,
                         again.equals(reference), len(reference), len(again),
                         lost=len(reference) - len(reference[keys].merge(again[keys].drop_duplicates(), on=keys)),
                         duplicated=int(again.duplicated(keys).sum()), recover_seconds=recover))
        log(_line(rows[-1]))
    return rows


def train_rows(workspace: Workspace, points: tuple[float, ...], log: Callable[[str], None]) -> list[dict[str, Any]]:
    seconds = workspace.run(workspace.root / "train-reference.log", "train", "train.model_prefix=ref")
    [expected] = _versions(workspace.state, "ref-style")
    rows = []
    for n, point in enumerate(points):
        killed, sets = _kill_at(workspace, f"train-{point}", "train", point, seconds,
                                lambda attempt, n=n: (f"train.model_prefix=killed{n}x{attempt}",))
        prefix = sets[0].split("=")[1]
        seen = _versions(workspace.state, f"{prefix}-style")
        reader_ok = all(v["status"] != "READY" or v["loads"] for v in seen)
        started = time.perf_counter()
        workspace.run(workspace.root / f"train-{point}-again.log", "train", *sets)
        recover = time.perf_counter() - started
        ready = [v for v in _versions(workspace.state, f"{prefix}-style") if v["status"] == "READY" and v["loads"]]
        rows.append(_row(f"process_killed_during_train_at_{round(point * 100)}pct", killed, reader_ok,
                         [v["metrics"] for v in ready] == [expected["metrics"]], 1, len(ready), lost=int(not ready),
                         duplicated=max(0, len(ready) - 1), recover_seconds=recover))
        log(_line(rows[-1]))
    return rows


SAVER = """
import sys
from pathlib import Path

import numpy as np

from chorus.search import SearchIndex

rng = np.random.default_rng(1)
n = int(sys.argv[2])
index = SearchIndex.build(np.array([f"t{i:05d}" for i in range(n)]), rng.normal(size=(n, 128)).astype(np.float32),
                          np.where(rng.normal(size=(n, 64)) >= 0, 1.0, -1.0), {"name": "swap"})
print("built", flush=True)
saves, done = int(sys.argv[3]), 0  # saves 0: until killed
while saves == 0 or done < saves:
    index.save(Path(sys.argv[1]))
    done += 1
"""


def index_rows(root: Path, kills: int, log: Callable[[str], None], tracks: int = 5000) -> list[dict[str, Any]]:
    """A process saving an index back to back, SIGKILLed ``kills`` times at random moments."""
    import random

    from chorus.config import load_settings
    from chorus.housekeeping import find_garbage, remove
    from chorus.search import SearchIndex

    state = root / "index-state"
    folder = StateDir(state).search / "swap"
    rng = random.Random(0)
    reader_ok, started = True, time.perf_counter()
    for n in range(kills):
        out = root / f"index-{n}.log"
        with out.open("wb") as sink:
            process = subprocess.Popen([sys.executable, "-c", SAVER, str(folder), str(tracks), "0"], stdout=sink,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_line(out, process, "built")
        time.sleep(rng.uniform(0.5, 3.0))
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        try:
            reader_ok &= len(SearchIndex.load(folder).track_ids) == tracks
        except Exception:  # no index, or half of one, where a reader looks
            reader_ok = False
    settings = load_settings(overrides={"state_dir": str(state)})
    leftovers = find_garbage(settings, set(), scratch_root=root)  # what the killed saves left
    remove(leftovers)
    recover_started = time.perf_counter()
    subprocess.run([sys.executable, "-c", SAVER, str(folder), str(tracks), "1"],
                   check=True, capture_output=True)
    loaded = SearchIndex.load(folder).track_ids
    clean = find_garbage(settings, set(), scratch_root=root) == []
    row = _row(f"process_killed_during_index_swap_{kills}_times", True, reader_ok, clean, tracks, len(loaded),
               lost=tracks - len(set(loaded.tolist())), duplicated=len(loaded) - len(set(loaded.tolist())),
               recover_seconds=time.perf_counter() - recover_started)
    row["leftovers_found_by_gc"] = len(leftovers)
    log(_line(row) + f"; gc found {len(leftovers)} leftovers in {time.perf_counter() - started:.0f} s")
    return [row]


def _line(row: dict[str, Any]) -> str:
    return (f"{row['fault']:>40}: {'survived' if row['survived'] else 'NOT SURVIVED'}, killed mid-run "
            f"{row['killed_mid_run']}, reader saw whole outputs {row['reader_saw_whole_outputs']}, equal to undisturbed "
            f"{row['equal_to_undisturbed']}, rerun {row['recover_seconds']} s")


def run(quick: bool = False, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Labels and train killed at one point (``quick``: 60% of the undisturbed run) or three (30%,
    60%, 90%), on a small demo corpus in a scratch folder; the index swap killed 3 (10) times."""
    points = (0.6,) if quick else (0.3, 0.6, 0.9)
    root = Path(tempfile.mkdtemp(prefix="chorus-process-faults-"))
    try:
        workspace = Workspace(root)
        log("ingest and features of a small demo corpus")
        workspace.run(root / "ingest.log", "ingest")
        workspace.run(root / "features.log", "features")
        rows = index_rows(root, 3 if quick else 10, log)
        rows += labels_rows(workspace, points, log)
        return rows + train_rows(workspace, points, log)
    finally:
        shutil.rmtree(root, ignore_errors=True)
