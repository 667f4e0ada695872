"""What every stage shares: its summary, the context it opens with, the GX validator of its
process, the metrics file, and the commit it ran from."""

from __future__ import annotations

import json
import logging
import resource
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chorus import progress, registry
from chorus.compute import tune_process_allocator
from chorus.config import ChorusSettings
from chorus.errors import InputError
from chorus.io import json_plain, write_json_atomic
from chorus.models.scorer import keep_embeddings_in
from chorus.state import StateDir
from chorus.validation import Validator

log = logging.getLogger("chorus.stages")


@dataclass
class StageSummary:
    """What a stage did: ``skipped`` when its output was already current."""

    stage: str
    skipped: bool
    outputs: dict[str, str] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values (the summary is a Prefect task result, persisted as JSON)."""
        return json_plain({"stage": self.stage, "skipped": self.skipped, "outputs": self.outputs,
                           "counts": self.counts, "seconds": round(self.seconds, 2), "cpu": self.cpu})


def cpu_use() -> tuple[float, float, int]:
    """User and system CPU seconds and minor page faults of this process and of its children
    that have ended (a stage's local Dask workers, once its cluster closed)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + children.ru_utime, own.ru_stime + children.ru_stime, own.ru_minflt + children.ru_minflt


def cpu_since(before: tuple[float, float, int]) -> dict[str, float]:
    """What ``cpu_use`` grew by since ``before``: user_s, system_s, system_share (of user), minor_faults."""
    user, system, faults = (now - then for now, then in zip(cpu_use(), before, strict=True))
    return {"user_s": round(user, 2), "system_s": round(system, 2),
            "system_share": round(system / user, 4) if user > 0 else 0.0, "minor_faults": int(faults)}


@dataclass
class StageContext:
    """What a stage opens with: its settings, the state directory (created), the registry bound to
    the tracking URI (when the stage uses it), and a timer and CPU counters for its summary (the
    whole process's: stages that run at once share them)."""

    settings: ChorusSettings
    state: StateDir
    started: float
    cpu_at_open: tuple[float, float, int]

    @classmethod
    def open(cls, settings: ChorusSettings, *, uses_registry: bool = False, stage: str | None = None) -> StageContext:
        """Open a stage: the process's heap tuned for training (``tune_process_allocator``), its
        state directory created (frozen networks' embeddings kept under it),
        the registry bound when it uses one, and a ``started`` progress event for ``stage``
        (``chorus.progress``)."""
        tune_process_allocator()  # served flow runs and library callers never pass through the CLI's launcher
        state = StateDir(settings.state_dir).create()
        keep_embeddings_in(state.embeddings)
        if uses_registry:
            registry.configure(settings.tracking_uri, state.mlflow_artifacts, settings.orchestration.service_wait_s)
        if stage is not None:
            progress.started(stage)
        return cls(settings, state, time.perf_counter(), cpu_use())

    def output_file(self, out: str) -> Path:
        """Where a stage writes the file a caller named: ``out`` must be a Parquet file under
        ``<state>/exports`` or ``export_root``, and never inside the state directory elsewhere
        (the pipeline's own tables: labels, tracks, features); InputError otherwise."""
        target = Path(out).expanduser().resolve()
        state = self.state.root.resolve()
        exports = self.state.exports.resolve()
        roots = [exports] + ([self.settings.export_root.expanduser().resolve()] if self.settings.export_root else [])
        owned = target.is_relative_to(state) and not target.is_relative_to(exports)
        if owned or not any(target.is_relative_to(root) for root in roots):
            raise InputError(out, f"outside where chorus may write ({', '.join(map(str, roots))}); write under "
                                  f"{exports} or set export_root (never over the pipeline's own files)")
        if target.suffix != ".parquet":
            raise InputError(out, "must be a .parquet file")
        return target

    def summary(self, stage: str, skipped: bool, outputs: dict[str, str] | None = None,
                counts: dict[str, Any] | None = None) -> StageSummary:
        """The stage's summary; a ``finished`` progress event tells its counts."""
        done = StageSummary(stage, skipped, outputs or {}, counts or {}, time.perf_counter() - self.started,
                            cpu_since(self.cpu_at_open))
        progress.finished(stage, brief_counts(done.counts), done.seconds, skipped)
        return done


def brief_counts(counts: dict[str, Any], width: int = 100) -> str:
    """A stage's scalar counts in one line (``tracks 180, shards 2``)."""
    parts = [f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in counts.items()
             if isinstance(v, int | float | str) and not isinstance(v, bool)]
    line = ", ".join(parts)
    return line if len(line) <= width else line[: width - 1] + "…"


_VALIDATORS: dict[str, Validator] = {}


def shared_validator(settings: ChorusSettings) -> Validator:
    """One GX context per process and state directory: its set-up costs seconds."""
    docs = StateDir(settings.state_dir).data_docs
    if str(docs) not in _VALIDATORS:
        _VALIDATORS[str(docs)] = Validator(docs)
    return _VALIDATORS[str(docs)]


def read_metrics(path: Path) -> dict[str, Any]:
    """reports/metrics.json: one section per stage that reports figures ({} before any)."""
    return json.loads(path.read_text()) if path.exists() else {}


def update_metrics(path: Path, section: str, value: Any) -> None:
    summary = read_metrics(path)
    summary[section] = value
    write_json_atomic(path, summary)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
