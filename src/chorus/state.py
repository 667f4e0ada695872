"""The state directory: where every output lives, and the lock that keeps runs apart."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from chorus.compute import arrow_system_allocator
from chorus.datasets.candidates import DEMO_STAMP
from chorus.errors import StateLockedError

# Closed network: telemetry and update checks hang or fail, so they are off everywhere
# (MLflow accepts only the literal "true" for DO_NOT_TRACK).
TELEMETRY_OFF: dict[str, str] = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
}


@dataclass(frozen=True)
class StateDir:
    """Named locations under one root. Deleting the root resets the project."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def demo(self) -> Path:
        return self.data / "demo"

    @property
    def tracks(self) -> Path:
        return self.data / "tracks.parquet"

    @property
    def ingest_batch(self) -> Path:
        """The tracks the last ingest added (the batch the drift watch compares)."""
        return self.data / "last_batch.json"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def social(self) -> Path:
        return self.root / "social"

    @property
    def labels(self) -> Path:
        return self.root / "labels"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def audit(self) -> Path:
        """Append-only records (promotions, failures)."""
        return self.root / "audit"

    @property
    def library(self) -> Path:
        """A music library's run (``chorus run --library``): a state directory of its own."""
        return self.root / "library"

    @property
    def pretext(self) -> Path:
        """The backbone's pretext corpus: a state directory of its own (data/, features/)."""
        return self.root / "pretext"

    @property
    def checkpoints(self) -> Path:
        """Per-epoch training checkpoints, kept until the model is registered (resume after a kill)."""
        return self.root / "checkpoints"

    @property
    def pretrained(self) -> Path:
        """Pretrained weights converted from their source, with their provenance."""
        return self.root / "pretrained"

    @property
    def search(self) -> Path:
        """Search indexes, one folder per pair of model versions, and batch query results."""
        return self.root / "search"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def melody(self) -> Path:
        """Notes and melodies per track (audio and score), and the humming queries that judge them."""
        return self.root / "melody"

    @property
    def exports(self) -> Path:
        """Where tag, search and hum write the files a caller names (`out`)."""
        return self.root / "exports"

    @property
    def personal(self) -> Path:
        """The personalised mood model: heads (safetensors), listener table (Parquet), description."""
        return self.root / "personal"

    @property
    def melody_index(self) -> Path:
        """The melody index (query by humming), beside the similar-song indexes."""
        return self.search / "melody"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def data_docs(self) -> Path:
        return self.root / "gx" / "data_docs"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    @property
    def logs(self) -> Path:
        """The full log of each command run against this state (the console shows a summary)."""
        return self.root / "logs"

    # Each output file named once: the stages, flows and CLI read these, never a literal path.

    @property
    def demo_stamp(self) -> Path:
        """The demo corpus's key and counts (reused while its settings are unchanged)."""
        return self.demo / DEMO_STAMP

    @property
    def embeddings(self) -> Path:
        """Frozen networks' embeddings of stored segments, by weights and content (safe to delete)."""
        return self.root / "embeddings"

    @property
    def remote_cache(self) -> Path:
        """Local copies of remote corpus files (http, s3, ...), by content."""
        return self.data / "remote-cache"

    @property
    def ingest_quarantine(self) -> Path:
        """Files ingest rejected, each with its reason."""
        return self.quarantine / "ingest.parquet"

    def features_quarantine(self, config_hash: str) -> Path:
        """Tracks a feature configuration could not extract, each with its reason."""
        return self.quarantine / f"features-{config_hash}.parquet"

    def social_table(self, name: str) -> Path:
        """The validated copy of one social table (users, follows, playlists, playlist_tracks)."""
        return self.social / f"{name}.parquet"

    @property
    def labels_table(self) -> Path:
        """The voted truths: global, group and personal, one row per scope and track."""
        return self.labels / "labels.parquet"

    @property
    def social_rejects(self) -> Path:
        """Social rows the referential checks rejected, each with its reason."""
        return self.quarantine / "social-rejects.parquet"

    @property
    def metrics(self) -> Path:
        """reports/metrics.json: one section per stage that reports figures."""
        return self.reports / "metrics.json"

    @property
    def promotions(self) -> Path:
        """Every promotion decision and rollback, one JSON line each."""
        return self.audit / "promotions.jsonl"

    @property
    def failures(self) -> Path:
        """Every failed flow run, one JSON line each."""
        return self.audit / "failures.jsonl"

    @property
    def tags(self) -> Path:
        """Predictions written by ``chorus tag``."""
        return self.root / "tags"

    @property
    def search_results(self) -> Path:
        """Batch query results written by ``chorus search``."""
        return self.search / "results"

    def create(self) -> StateDir:
        for path in (self.data, self.features, self.social, self.labels, self.reports,
                     self.quarantine, self.prefect_home, self.mlflow_artifacts, self.data_docs):
            path.mkdir(parents=True, exist_ok=True)
        return self


def runtime_environment(state: StateDir) -> dict[str, str]:
    """Environment a run needs before Prefect/MLflow/GX are imported.

    PREFECT_HOME under the state directory keeps the ephemeral API's database there too.
    Values already set by the user win (a production PREFECT_API_URL, for instance).
    """
    env = dict(TELEMETRY_OFF)
    env.update(
        {
            "PREFECT_HOME": str(state.prefect_home),
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false",
            # MLflow's download bars would cut through the console's stage lines
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            # Stored results and models are read without unpickling (issue: locked by default)
            "PREFECT_RESULTS_DEFAULT_SERIALIZER": "json",
            "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
            # One BLAS/OMP thread per process: parallelism comes from Dask processes.
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            # Arrow on the system allocator: its default (mimalloc) grows a long stage's process
            "ARROW_DEFAULT_MEMORY_POOL": "system",
        }
    )
    return env


def apply_runtime_environment(state: StateDir, override: bool = False, prefect_api_url: str | None = None) -> None:
    """Set the run's environment; ``prefect_api_url`` (the ``prefect_api_url`` setting) points
    Prefect at a server and wins over an inherited PREFECT_API_URL, being the more specific."""
    state.create()  # PREFECT_HOME must exist before Prefect starts its temporary API
    for key, value in runtime_environment(state).items():
        if override or key not in os.environ:
            os.environ[key] = value
    if prefect_api_url:
        os.environ["PREFECT_API_URL"] = prefect_api_url
    if os.environ["ARROW_DEFAULT_MEMORY_POOL"] == "system":  # a pool the user chose stays theirs
        arrow_system_allocator()  # the variable alone is too late where Arrow has allocated already


# Locks this process holds, by lock-file path: nested flows of one run re-enter instead of
# refusing themselves. (root path -> [FileLock, depth])
_HELD: dict[str, list[Any]] = {}
_HELD_GUARD = threading.Lock()


@contextmanager
def state_lock(state: StateDir, timeout_s: float = 0.0) -> Iterator[None]:
    """Hold the state directory for one run.

    A second run against the same state waits up to ``timeout_s`` (-1: forever) and otherwise
    refuses with a message naming the holder; it never interleaves writes. The lock is an OS
    file lock, so a crashed run does not leave it held. Re-entrant within one process.
    """
    state.root.mkdir(parents=True, exist_ok=True)
    key = str(state.lock_file.resolve())
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is not None:
            held[1] += 1
    if held is not None:
        try:
            yield
        finally:
            with _HELD_GUARD:
                held[1] -= 1
        return
    lock = FileLock(key)
    info_file = state.root / ".lock.info"
    try:
        lock.acquire(timeout=timeout_s if timeout_s >= 0 else -1)
    except Timeout:
        holder = "another chorus run"
        try:
            info = json.loads(info_file.read_text())
            holder = f"pid {info['pid']} on {info['host']} since {info['since']}"
        except (OSError, ValueError, KeyError):
            pass
        raise StateLockedError(
            f"{state.root}: state directory is in use by {holder}; wait for it "
            "(--lock-timeout SECONDS, -1 waits forever) or use another --state-dir"
        ) from None
    entry: list[Any] = [lock, 1]
    with _HELD_GUARD:
        _HELD[key] = entry
    try:
        info_file.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
            )
        )
        yield
    finally:
        with _HELD_GUARD:
            entry[1] -= 1
            if entry[1] <= 0:
                _HELD.pop(key, None)
                lock.release()
