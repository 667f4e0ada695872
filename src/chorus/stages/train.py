"""The train stage: every selected candidate trained (or found registered under its key), tracked
as an MLflow run, registered under its task's name; the best new version of each name becomes its
challenger. The backbone's pretraining is the same stage on one candidate."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from chorus import progress, registry
from chorus.compute import release_freed_memory
from chorus.config import ChorusSettings, stable_hash
from chorus.datasets.pretext import STAMP_NAME
from chorus.errors import InputError
from chorus.evaluation.report import history_figure
from chorus.families import (
    CATALOGUE,
    CandidateSpec,
    TaskTargets,
    Trained,
    candidate_features,
    family_of,
    key_settings,
    resolve_candidates,
    task_targets,
    train_candidate,
)
from chorus.features import FeatureSet, load_features, map_names
from chorus.label_tasks import (
    MultiLabelTruth,
)
from chorus.models.scorer import Scorer
from chorus.stages.context import StageContext, StageSummary, git_commit
from chorus.stages.inputs import (
    candidate_key,
    mood_labels,
    pretext_tracks,
    training_source,
    training_tracks,
)
from chorus.state import StateDir

EpochCallback = Callable[[dict[str, Any]], None]


@dataclass
class TrainingInputs:
    """What the candidates of one training share, loaded once per source state directory (the
    backbone's may be the pretext corpus): tracks, targets per task family, features, keys, and
    the scorers later candidates build on."""

    settings: ChorusSettings
    tracks: dict[Path, pd.DataFrame]
    moods: MultiLabelTruth
    targets: dict[str, TaskTargets] = field(default_factory=dict)
    features: dict[tuple[Path, str], FeatureSet] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    deps: dict[str, Scorer] = field(default_factory=dict)

    def source_tracks(self, spec: CandidateSpec) -> pd.DataFrame:
        source = training_source(self.settings, spec.task)
        if source.state_dir not in self.tracks:
            self.tracks[source.state_dir] = pretext_tracks(source)
        return self.tracks[source.state_dir]

    def targets_of(self, spec: CandidateSpec) -> TaskTargets:
        if spec.task not in self.targets:
            self.targets[spec.task] = task_targets(spec.task, self.source_tracks(spec), self.settings.train, self.moods)
        return self.targets[spec.task]

    def features_of(self, spec: CandidateSpec) -> FeatureSet:
        """The train and valid segments of the candidate's source corpus."""
        source = training_source(self.settings, spec.task)
        feature_settings = candidate_features(spec, self.settings.features)
        key = (source.state_dir, feature_settings.config_hash())
        if key not in self.features:
            tracks = self.source_tracks(spec)
            ids = tracks.loc[tracks["split"].isin(["train", "valid"]), "track_id"].tolist()
            self.features[key] = load_features(StateDir(source.state_dir).features, feature_settings, ids,
                                               maps=map_names(feature_settings))
        return self.features[key]


def train_stage(settings: ChorusSettings, on_epoch: EpochCallback | None = None, candidates: list[str] | None = None,
                assign_challengers: bool = True) -> StageSummary:
    """Train every selected candidate (``train.candidates`` or the profile's set, plus what they
    need), log each as an MLflow run and register it under its task's name. A candidate whose key
    (settings, features, targets, dependencies) has a registered version is not retrained. The
    best-validated new version of each name becomes its ``challenger``."""
    ctx = StageContext.open(settings, uses_registry=True, stage="train")
    tracks = training_tracks(settings)
    specs = resolve_candidates(candidates or list(settings.train.selected))
    if settings.train.task not in tracks.columns and any(spec.task in ("style", "hash") for spec in specs):
        raise InputError(str(ctx.state.tracks), f"train.task '{settings.train.task}' is not a column of the tracks table",
                         "choose a task of this corpus: chorus run --task <name>")
    inputs = TrainingInputs(settings, {settings.state_dir: tracks}, mood_labels(settings, tracks))
    needed = {need for spec in specs for need in spec.needs}
    results = {}
    for spec in specs:
        results[spec.name] = _train_or_reuse(ctx, inputs, spec, spec.name in needed, on_epoch)
        release_freed_memory()  # a candidate's batches and activations, before the next one's
    if assign_challengers:
        set_challengers(results)
    return train_summary(settings, results, ctx.started, ctx.cpu_at_open)


def _train_or_reuse(ctx: StageContext, inputs: TrainingInputs, spec: CandidateSpec, needed: bool,
                    on_epoch: EpochCallback | None) -> dict[str, Any]:
    """One candidate: its registered version when its key has one, else trained and registered."""
    ts = ctx.settings.train
    targets = inputs.targets_of(spec)
    key = inputs.keys[spec.name] = candidate_key(ctx.settings, spec, targets, {n: inputs.keys[n] for n in spec.needs})
    name = ts.registered_name(spec.registered_task(ts))
    ref = registry.find_version(name, key)
    row: dict[str, Any] = {"registered": name, "task": spec.registered_task(ts), "kind": spec.kind}
    if ref is not None:
        row.update(skipped=True, valid_score=_version_metric(ref.run_id, "valid_score"))
        if needed:
            inputs.deps[spec.name] = registry.load_scorer(name, ref.version)
    else:
        features = inputs.features_of(spec)
        checkpoint = ctx.state.checkpoints / f"{spec.name}-{key}.pt"
        run_id = registry.training_run(spec.name, key)
        trained = _train_one(spec, features, ctx.settings, targets, inputs.deps, checkpoint, on_epoch, run_id)
        ref = _register(spec, trained, name, key, ctx.settings, features, run_id)
        checkpoint.unlink(missing_ok=True)
        inputs.deps[spec.name] = trained.scorer
        row.update(skipped=False, **trained.summary)
    if spec.task == "tags" and registry.alias_version(name, "champion") != ref.version:
        # no labelled data here can judge a pretrained tagger's 50 tags: the gate has nothing to
        # score it on, so the version of the pinned weights serves (chorus tag --model NAME)
        registry.set_alias(name, "champion", ref.version)
    row.update(version=ref.version, run_id=ref.run_id, uri=ref.uri)
    return row


def set_challengers(results: dict[str, dict[str, Any]]) -> None:
    """Each registered name with versions new in this run gets the alias ``challenger`` on the
    best-validated of them; the promotion gate decides whether it becomes champion."""
    judged = {k: r for k, r in results.items() if CATALOGUE[k].task not in ("pretext", "tags")}  # see _train_or_reuse
    for name in sorted({r["registered"] for r in judged.values()}):
        new = [r for r in judged.values() if r["registered"] == name and not r["skipped"]]
        if not new:
            continue
        best = max(new, key=lambda r: float(r["valid_score"]) if r.get("valid_score") is not None else -1.0)
        registry.set_alias(name, "challenger", best["version"])
    for row in results.values():
        row["champion"] = registry.alias_version(row["registered"], "champion")
        row["challenger"] = registry.alias_version(row["registered"], "challenger")


def train_summary(settings: ChorusSettings, results: dict[str, dict[str, Any]], started: float,
                  cpu_at_start: tuple[float, float, int]) -> StageSummary:
    """The train stage's summary of ``results`` (one row per candidate), timed from ``started``
    (``time.perf_counter``) with the CPU used since ``cpu_at_start`` (``cpu_use``)."""
    ctx = StageContext(settings, StateDir(settings.state_dir), started, cpu_at_start)
    counts = {"candidates": results, "trained": sum(not r["skipped"] for r in results.values()),
              "reused": sum(r["skipped"] for r in results.values())}
    return ctx.summary("train", all(r["skipped"] for r in results.values()),
                       {"tracking_uri": settings.tracking_uri, **{k: r["uri"] for k, r in results.items()}}, counts)


def pretrain_stage(settings: ChorusSettings, on_epoch: EpochCallback | None = None) -> StageSummary:
    """The backbone's pretext training on its own (cached like any candidate)."""
    summary = train_stage(settings, on_epoch=on_epoch, candidates=["backbone"])
    summary.stage = "pretrain"
    return summary


def _version_metric(run_id: str, metric: str) -> float | None:
    value = MlflowClient().get_run(run_id).data.metrics.get(metric)
    return float(value) if value is not None else None


def _train_one(spec: CandidateSpec, features: FeatureSet, settings: ChorusSettings, targets: TaskTargets,
               deps: dict[str, Scorer], checkpoint: Path, on_epoch: EpochCallback | None, run_id: str) -> Trained:
    def report(row: dict[str, float]) -> None:
        registry.log_epoch(run_id, row)  # live: a long training can be watched in the MLflow UI
        progress.advanced("pretrain" if spec.task == "pretext" else "train", int(row["epoch"]),
                          settings.train.backbone.epochs if spec.task == "pretext" else settings.train.epochs, "epochs", spec.name)
        if on_epoch:
            on_epoch({"candidate": spec.name, **row})

    return train_candidate(spec, features, candidate_features(spec, settings.features), targets, settings.train, deps,
                           checkpoint, report, StateDir(settings.state_dir).pretrained)


def _run_params(spec: CandidateSpec, trained: Trained, settings: ChorusSettings, features: FeatureSet,
                split_manifest: str) -> dict[str, Any]:
    """The MLflow run's parameters: the candidate, its training settings and its data's hashes."""
    ts = settings.train
    params = {"candidate": spec.name, "task": spec.registered_task(ts), "kind": spec.kind,
              **{f"train.{k}": v for k, v in ts.model_dump(mode="json", exclude={"svm", "hashing", "backbone"}).items()},
              **{f"candidate.{k}": v for k, v in trained.params.items() if k != "selected_maps"},
              "feature_config_hash": features.config_hash, "split_manifest_hash": split_manifest,
              "n_train_segments": trained.summary.get("n_train_segments")}
    if family_of(spec).runtime == "sklearn":
        params.update({f"svm.{k}": v for k, v in ts.svm.model_dump(mode="json").items()})
    if spec.task == "hash":
        params.update({f"hashing.{k}": v for k, v in ts.hashing.model_dump(mode="json").items()})
    if spec.task == "pretext":
        params.update({f"backbone.{k}": v for k, v in ts.backbone.model_dump(mode="json").items()})
    return params


def _pretext_corpus(spec: CandidateSpec, settings: ChorusSettings) -> dict[str, Any] | None:
    """The rendered pretext corpus the backbone trained on (its stamp, less the settings)."""
    if spec.task != "pretext" or settings.train.backbone.corpus != "rendered":
        return None
    stamp = json.loads((StateDir(training_source(settings, spec.task).state_dir).demo / STAMP_NAME).read_text())
    return {k: v for k, v in stamp.items() if k not in ("demo", "backbone")}


def _register(spec: CandidateSpec, trained: Trained, name: str, key: str, settings: ChorusSettings,
              features: FeatureSet, run_id: str) -> registry.ModelRef:
    ts = settings.train
    commit = git_commit()
    feature_settings = candidate_features(spec, settings.features)
    example = np.stack([features.maps[m][:2] for m in map_names(feature_settings)], axis=1).astype(np.float32)
    split_manifest = stable_hash(sorted(features.segments["track_id"].unique().tolist()))
    config = {"candidate": key_settings(spec, ts), "train": ts.model_dump(mode="json"),
              "features": feature_settings.model_dump(mode="json")}
    params = _run_params(spec, trained, settings, features, split_manifest)
    pretext_corpus = _pretext_corpus(spec, settings)
    if pretext_corpus is not None:
        params.update({f"pretext.{k}": pretext_corpus[k] for k in ("key", "tracks", "works", "excluded_works")})
    # Networks logged their epochs live; a baseline's one validation score is logged here.
    history = [] if trained.history else [{"epoch": 1, "valid_score": trained.summary.get("valid_score") or float("nan")}]
    figures = {"training_curves.png": history_figure(trained.history)} if trained.history else {}
    ref = registry.log_candidate(
        trained.scorer, name, key, params=params, history=history,
        tags={registry.CANDIDATE_TAG: spec.name, registry.TASK_TAG: spec.registered_task(ts),
              "chorus.feature_config_hash": features.config_hash, "chorus.git_commit": commit,
              "chorus.device": str(trained.summary.get("device")), "chorus.precision": str(trained.summary.get("precision"))},
        artifacts={"config.json": config, "labels.json": trained.scorer.contract.labels, "history.json": trained.history,
                   "summary.json": trained.summary, "candidate.json": trained.params,
                   "provenance.json": {"feature_config_hash": features.config_hash, "split_manifest_hash": split_manifest,
                                       "train_key": key, "git_commit": commit, "pretext_corpus": pretext_corpus}},
        input_example=example, figures=figures, run_id=run_id)
    for figure in figures.values():
        plt.close(figure)
    return ref
