"""Batch tagging: audio files in, a registered model's predictions out, computed with the same
feature code and the feature settings the model was trained on (read from its MLflow run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chorus import registry
from chorus.audio import AUDIO_SUFFIXES, AudioProblem
from chorus.config import FeatureSettings, IngestSettings
from chorus.errors import InputError, StaleFeaturesError
from chorus.families import CATALOGUE
from chorus.features import TrackFeatures, extract_track_or_problem, problem_record
from chorus.ingest import probe_within_limits

TOP_TAGS = 5


def audio_files(paths: list[Path]) -> list[Path]:
    """The files named, and the audio files under the folders named (sorted, deduplicated)."""
    found: set[Path] = set()
    for path in paths:
        if path.is_dir():
            found.update(p.resolve() for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        elif path.is_file():
            found.add(path.resolve())
        else:
            raise InputError(str(path), "no such file or folder")
    return sorted(found)


def model_feature_settings(name: str, version: int) -> FeatureSettings:
    """The feature settings a registered version was trained on (its run's provenance/config.json),
    checked against the feature-config hash the model carries."""
    from mlflow import MlflowClient
    from mlflow.artifacts import load_dict
    from mlflow.exceptions import MlflowException

    run_id = registry.run_id_of(name, version)
    try:  # load_dict downloads into a temporary folder it removes (download_artifacts would leave one)
        config = load_dict(f"runs:/{run_id}/provenance/config.json")
    except MlflowException as exc:
        raise InputError(f"models:/{name}/{version}", "its run has no provenance/config.json, so the feature settings "
                                                      "it was trained on are unknown; retrain it with chorus") from exc
    settings = FeatureSettings(**config["features"])
    expected = MlflowClient().get_model_version(name, str(version)).tags.get(registry.FEATURE_HASH_TAG)
    if expected and settings.config_hash() != expected:
        raise StaleFeaturesError(f"models:/{name}/{version}: its recorded feature settings hash to {settings.config_hash()}, "
                                 f"not the {expected} it was trained on")
    return settings


def chosen_labels(labels: list[str], mean: np.ndarray, kind: str, calibrated: bool, top_n: int | None = None,
                  threshold: float | None = None) -> list[str]:
    """The labels a file gets from its mean scores: a single-label model's top ``top_n`` (1 by
    default); a multi-label model's labels at or above ``threshold`` (0.5 by default; its best one
    when none is), at most ``top_n``; an uncalibrated tagger's (a pretrained one's) ``top_n``
    strongest (5 by default), those below ``threshold`` left out when one is given."""
    order = [int(j) for j in np.argsort(-mean, kind="stable")]
    if kind == "single":
        kept = [j for j in order[: top_n or 1] if threshold is None or mean[j] >= threshold] or order[:1]
    elif calibrated:
        kept = [j for j in order if mean[j] >= (0.5 if threshold is None else threshold)][:top_n] or order[:1]
    else:
        kept = [j for j in order[: top_n or TOP_TAGS] if threshold is None or mean[j] >= threshold]
    return [labels[j] for j in kept]


def tag_files(files: list[Path], name: str, limits: IngestSettings, alias: str = "champion", top_n: int | None = None,
              threshold: float | None = None) -> pd.DataFrame:
    """One row per file: the model's output averaged over the file's segments, and the labels
    ``chosen_labels`` picks from it. Files that cannot be decoded, or break ingest's limits, get a
    row with their reason instead (nothing disappears)."""
    version = int(alias) if alias.isdigit() else registry.alias_version(name, alias)  # an alias or a version
    if version is None:
        raise InputError(f"models:/{name}@{alias}", "no such alias: train and promote a model first")
    scorer = registry.load_scorer(name, version)
    features = model_feature_settings(name, version)
    scorer.contract.check_features(features.config_hash())
    contract = scorer.contract
    rows: list[dict[str, Any]] = []
    for path in files:
        try:
            probe_within_limits(path, limits)
        except AudioProblem as problem:
            item: TrackFeatures | dict[str, str] = problem_record(path.stem, str(path), problem)
        else:
            item = extract_track_or_problem(path.stem, str(path), features)
        row: dict[str, Any] = {"file": str(path), "model": name, "version": version, "candidate": contract.candidate}
        if isinstance(item, dict):
            rows.append({**row, "segments": 0, "labels": [], "scores": "{}", "problem": f"{item['reason']}: {item['detail']}"})
            continue
        stacked = np.stack([item.maps[m] for m in contract.stored_maps], axis=1)
        mean = scorer.scores(stacked).mean(axis=0)
        if contract.kind in ("single", "multi"):
            calibrated = getattr(CATALOGUE.get(contract.candidate), "task", None) != "tags"
            labels = chosen_labels(list(contract.labels), mean, contract.kind, calibrated, top_n, threshold)
            scores = dict(zip(contract.labels, mean.round(4).tolist(), strict=True))
        else:  # hash: the track's code is the sign of the mean of its segments' codes
            labels = ["".join("1" if v >= 0 else "0" for v in mean)]
            scores = {"bits": len(mean)}
        rows.append({**row, "segments": int(stacked.shape[0]), "labels": labels, "scores": json.dumps(scores),
                     "problem": None})
    return pd.DataFrame(rows)
