"""MLflow: tracking runs, registering versions, aliases. Plain functions over MlflowClient.

Stages are deprecated in MLflow 3; promotion uses aliases (``champion``) and tags. Each version
carries ``chorus.train_key`` (settings + data), so an unchanged re-run finds its version instead of
registering a new one, and the feature-config hash it was trained on.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chorus.errors import InputError, UnsafeModelError

log = logging.getLogger(__name__)

EXPERIMENT = "chorus"
FEATURE_HASH_TAG = "chorus.feature_config_hash"
TRAIN_KEY_TAG = "chorus.train_key"


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int
    run_id: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def retry_environment(service_wait_s: float) -> dict[str, str]:
    """MLflow's client settings that retry a refused or dropped connection, or a server error, for
    about ``service_wait_s`` in all before the call fails (its default waits minutes)."""
    # with a backoff factor of 1 (MLflow takes whole numbers) n retries sleep 0, 2, 4, ... : 2^n - 2 s
    retries = max(1, int(math.log2(service_wait_s + 2)))
    return {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries), "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def configure(tracking_uri: str, artifacts_dir: Path | None = None, service_wait_s: float = 30.0) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id. A server
    that stops answering is retried for about ``service_wait_s`` (``orchestration.service_wait_s``;
    what the environment already sets wins).

    With a SQLite store the artifact root would default to ./mlruns in the cwd, so the experiment
    is created with its artifacts under the state directory."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in a library call or a log
    for name, value in retry_environment(service_wait_s).items():
        os.environ.setdefault(name, value)
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"  # chorus's models load without pickle
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    experiment = _with_store_initialised(tracking_uri, lambda: mlflow.get_experiment_by_name(EXPERIMENT))
    if experiment is None:
        location = artifacts_dir.resolve().as_uri() if artifacts_dir is not None and tracking_uri.startswith("sqlite") else None
        try:
            mlflow.create_experiment(EXPERIMENT, artifact_location=location)
        except Exception:  # created concurrently by another process
            pass
        experiment = mlflow.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            raise RuntimeError(f"MLflow experiment {EXPERIMENT!r} could not be created at {tracking_uri}")
    # the active experiment: a run started without one (a baseline's) would land in "Default",
    # whose artifact root with a SQLite store is ./mlruns in the current directory
    mlflow.set_experiment(experiment_id=experiment.experiment_id)
    return experiment.experiment_id


def _with_store_initialised(tracking_uri: str, call: Any) -> Any:
    """First use of a SQLite store creates its tables; two creators racing fail with "table ...
    already exists" (seen here once on a fresh state). Serialise the first use with a file lock
    beside the database and retry once when the tables appeared under us."""
    if not tracking_uri.startswith("sqlite:///"):
        return call()
    from filelock import FileLock
    from sqlalchemy.exc import OperationalError

    db = Path(tracking_uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(db) + ".init.lock"):
        try:
            return call()
        except OperationalError as exc:
            if "already exists" not in str(exc):
                raise
            return call()


def find_version(name: str, train_key: str) -> ModelRef | None:
    """The registered version trained with exactly this key, if any."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{name}' and tags.`{TRAIN_KEY_TAG}` = '{train_key}'")
    except MlflowException:
        return None
    live = [v for v in versions if v.status == "READY"]
    if not live:
        return None
    best = max(live, key=lambda v: int(v.version))
    return ModelRef(name, int(best.version), str(best.run_id))


CANDIDATE_TAG = "chorus.candidate"
TASK_TAG = "chorus.task"


def log_candidate(
    scorer: Any,
    name: str,
    train_key: str,
    params: dict[str, Any],
    history: list[dict[str, float]],
    tags: dict[str, str],
    artifacts: dict[str, Any],
    input_example: Any,
    figures: dict[str, Any] | None = None,
    run_id: str | None = None,
) -> ModelRef:
    """One MLflow run per trained candidate: params, per-epoch metrics, provenance artifacts and
    figures, and the scorer logged as a pyfunc (one input schema per task: a batch of stored
    feature maps) with signature, an input example of two segments and explicit requirements,
    registered under ``name``."""
    import mlflow

    # the pyfunc subclasses mlflow's PythonModel: importing it loads mlflow, only when logging
    from chorus.models.persist import save_scorer
    from chorus.serving import MODEL_CODE, SCORER_ARTIFACT, pip_requirements, signature_of

    # With run_id, the run training_run opened is completed (pass only epochs not yet logged).
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else f"train-{tags.get(CANDIDATE_TAG, name)}") as run:
        flat = {k: (json.dumps(v) if isinstance(v, (list, dict, tuple)) else v) for k, v in params.items()}
        mlflow.log_params({k: (str(v)[:6000] if v is not None else "None") for k, v in flat.items()})
        for row in history:
            log_epoch(run.info.run_id, row)
        mlflow.set_tags({**tags, TRAIN_KEY_TAG: train_key})
        with tempfile.TemporaryDirectory() as tmp:
            for filename, content in artifacts.items():
                path = Path(tmp) / filename
                path.write_text(content if isinstance(content, str) else json.dumps(content, indent=2, default=str))
                mlflow.log_artifact(str(path), artifact_path="provenance")
        for filename, figure in (figures or {}).items():
            mlflow.log_figure(figure, f"provenance/{filename}")
        # MLflow prints its registration notices to stderr: they go to the log instead
        with contextlib.redirect_stderr(io.StringIO()) as notices, tempfile.TemporaryDirectory() as tmp:
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(MODEL_CODE),
                artifacts={SCORER_ARTIFACT: str(save_scorer(scorer, Path(tmp) / SCORER_ARTIFACT))},
                signature=signature_of(scorer, input_example),
                input_example=input_example,
                pip_requirements=pip_requirements(),
                registered_model_name=name,
                await_registration_for=60,
            )
        for line in notices.getvalue().splitlines():
            log.info("mlflow: %s", line)
        version = int(info.registered_model_version)
        from mlflow import MlflowClient

        client = MlflowClient()
        client.set_model_version_tag(name, str(version), TRAIN_KEY_TAG, train_key)
        for key, value in tags.items():
            client.set_model_version_tag(name, str(version), key, value)
        return ModelRef(name, version, run.info.run_id)


def log_epoch(run_id: str, row: dict[str, Any]) -> None:
    """One epoch's metrics (the row's numbers, NaN left out) to the run, at step = epoch."""
    import time

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    now, step = int(time.time() * 1000), int(row["epoch"])
    MlflowClient().log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in row.items()
                                              if k not in ("epoch", "candidate") and v == v])


def training_run(candidate: str, train_key: str) -> str:
    """The MLflow run a training logs its epochs to while it trains: the unfinished run of the
    same key (a resumed training continues it), or a new one."""
    import mlflow
    from mlflow import MlflowClient

    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    unfinished = MlflowClient().search_runs(
        [experiment.experiment_id], f"tags.`{TRAIN_KEY_TAG}` = '{train_key}' and attributes.status = 'RUNNING'",
        max_results=1, order_by=["attributes.start_time DESC"]) if experiment else []
    if unfinished:
        return unfinished[0].info.run_id
    assert experiment is not None  # configure() creates it
    run = MlflowClient().create_run(experiment.experiment_id, run_name=f"train-{candidate}",
                                    tags={TRAIN_KEY_TAG: train_key, CANDIDATE_TAG: candidate})
    return run.info.run_id


def parse_model_ref(ref: str, default_alias: str = "champion") -> tuple[str, int | str]:
    """A model named the way MLflow names one, or shorter: ``models:/NAME@ALIAS``,
    ``models:/NAME/VERSION``, ``NAME@ALIAS``, ``NAME/VERSION`` or ``NAME`` (its ``default_alias``)
    -> (name, version or alias).

    Examples
    --------
    >>> parse_model_ref("models:/chorus-style@champion")
    ('chorus-style', 'champion')
    >>> parse_model_ref("models:/chorus-style/3")
    ('chorus-style', 3)
    >>> parse_model_ref("chorus-mood")
    ('chorus-mood', 'champion')
    """
    body = ref.removeprefix("models:/")
    if "@" in body:
        name, alias = body.split("@", 1)
        if name and alias:
            return name, alias
    elif "/" in body:
        name, version = body.rsplit("/", 1)
        if name and version.isdigit():
            return name, int(version)
    elif body and not ref.startswith("models:/"):
        return body, default_alias
    raise InputError(ref, "not a model name: expected models:/NAME@ALIAS, models:/NAME/VERSION, NAME@ALIAS, "
                          "NAME/VERSION or NAME")


def model_uri(name: str, version_or_alias: int | str) -> str:
    return f"models:/{name}@{version_or_alias}" if isinstance(version_or_alias, str) else f"models:/{name}/{version_or_alias}"


def load_scorer(name: str, version_or_alias: int | str) -> Any:
    """The registered scorer itself (a TorchScorer or SklearnScorer), for embeddings and checks,
    read from the model's ``scorer`` artifact (JSON, safetensors, allow-listed skops): nothing
    stored with the model is unpickled or run. ``mlflow.pyfunc.load_model`` of the same URI gives
    the served view (it runs the model's code file)."""
    import mlflow.artifacts
    import yaml

    import chorus.families  # noqa: F401  (registers every family's networks)
    from chorus.models.persist import load_scorer_folder
    from chorus.serving import SCORER_ARTIFACT

    uri = model_uri(name, version_or_alias)
    with tempfile.TemporaryDirectory() as tmp:
        described = yaml.safe_load(Path(mlflow.artifacts.download_artifacts(f"{uri}/MLmodel", dst_path=tmp)).read_text())
        pyfunc = (described.get("flavors") or {}).get("python_function") or {}
        if "model_code_path" not in pyfunc or SCORER_ARTIFACT not in (pyfunc.get("artifacts") or {}):
            raise UnsafeModelError(f"{uri}: not a model chorus stored without pickle (no code path and {SCORER_ARTIFACT} "
                                   "artifact; a model registered by an older chorus, or planted): refused; retrain it")
        return load_scorer_folder(Path(mlflow.artifacts.download_artifacts(f"{uri}/artifacts/{SCORER_ARTIFACT}", dst_path=tmp)))


def version_tags(name: str, version: int) -> dict[str, str]:
    from mlflow import MlflowClient

    return dict(MlflowClient().get_model_version(name, str(version)).tags or {})


def registered_feature_hashes() -> set[str]:
    """Feature-config hashes that any registered model version (of any name) was trained on."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        versions = MlflowClient().search_model_versions()
    except MlflowException:
        return set()
    return {v.tags[FEATURE_HASH_TAG] for v in versions if FEATURE_HASH_TAG in (v.tags or {})}


def alias_version(name: str, alias: str) -> int | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        # SQLite gives an int, REST a str: normalise.
        return int(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def set_alias(name: str, alias: str, version: int) -> None:
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias(name, alias, str(version))


def run_id_of(name: str, version: int) -> str:
    from mlflow import MlflowClient

    return str(MlflowClient().get_model_version(name, str(version)).run_id)


def log_report(run_id: str, files: list[Path], metrics: dict[str, float], artifact_path: str = "evaluation") -> None:
    """Attach evaluation outputs (or a model card) to the training run of the version."""
    from mlflow import MlflowClient

    client = MlflowClient()
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path=artifact_path)
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
