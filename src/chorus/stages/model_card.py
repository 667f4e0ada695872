"""Model cards, shared by the card stage (one version on demand) and the evaluate stage (the cards
of the models it reports): HTML and markdown under <state>/reports/cards/, the markdown also an
MLflow artifact of the version's run (``card/``). Not a stage: stages import it beside
``context`` and ``inputs``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chorus import registry
from chorus.config import ChorusSettings
from chorus.errors import InputError
from chorus.evaluation.card import (
    LOUDNESS_BUCKETS,
    ModelCard,
    Section,
    duration_bucket,
    failure_rows,
    loudness_buckets,
    multi_label_results,
    single_label_results,
    slice_rows,
)
from chorus.evaluation.scoring import score_candidate
from chorus.families import CATALOGUE, CandidateSpec, family_of, task_targets
from chorus.features import FeatureSet
from chorus.io import write_text_atomic
from chorus.models.scorer import Scorer
from chorus.promotion import read_audit, verdict
from chorus.stages.context import StageContext
from chorus.stages.inputs import FeatureSets, mood_labels, training_tracks

ORDERED_SLICES = {"loudness": LOUDNESS_BUCKETS}  # slices shown in their own order, not by size

USES = {
    "single": ("Labelling music recordings with one of the classes below, from the stored log-mel features of "
               "the feature configuration it was trained on; ranking or filtering a catalogue by those classes.",
               "Speech, sound effects or audio outside the trained feature configuration; classes it was not "
               "trained on; decisions about people (listeners, artists) or anything legal or financial."),
    "multi": ("Scoring music recordings for each label below (probabilities, not calibrated to a threshold), e.g. "
              "to suggest tags or build playlists a person then reviews.",
              "Labels not in its vocabulary; treating a score as a certainty; speech or non-music audio; decisions "
              "about people."),
    "hash": ("Compact codes for finding similar recordings in a catalogue (Hamming distance).",
             "Identifying a recording exactly (it is not a fingerprint); similarity beyond the style it was trained on."),
}


def card_path(ctx: StageContext, name: str, version: int) -> Path:
    return ctx.state.reports / "cards" / f"{name}-v{version}.html"


def write_card(ctx: StageContext, name: str, version: int, tracks: pd.DataFrame | None = None,
               scorer: Scorer | None = None) -> Path:
    """The card's HTML page and markdown (also logged to the version's run under ``card/``)."""
    card, run_id = model_card(ctx, name, version, tracks, scorer)
    page = card_path(ctx, name, version)
    write_text_atomic(page, card.html())
    write_text_atomic(page.with_suffix(".md"), card.markdown())
    registry.log_report(run_id, [page.with_suffix(".md")], {}, artifact_path="card")
    return page


def model_card(ctx: StageContext, name: str, version: int, tracks: pd.DataFrame | None = None,
               scorer: Scorer | None = None) -> tuple[ModelCard, str]:
    """The card of one version, and its training run's id. ``tracks`` (the training tracks) and
    ``scorer`` (the version's), when the caller has them loaded."""
    settings = ctx.settings
    tags = registry.version_tags(name, version)
    candidate = tags.get(registry.CANDIDATE_TAG, "")
    if candidate not in CATALOGUE:
        raise InputError(f"models:/{name}/{version}", f"not a chorus candidate (tag {registry.CANDIDATE_TAG}={candidate!r})")
    spec = CATALOGUE[candidate]
    run_id = registry.run_id_of(name, version)
    scorer = registry.load_scorer(name, version) if scorer is None else scorer
    tracks = training_tracks(settings) if tracks is None else tracks
    moods = mood_labels(settings, tracks) if spec.task == "mood" else None
    targets = task_targets("style" if spec.task == "hash" else spec.task, tracks, settings.train, moods)
    test_ids = list(targets.splits["test"])
    features = FeatureSets(ctx.state.features, settings.features, test_ids).for_contract(scorer.contract)
    scorer.contract.check_features(features.config_hash)
    kind = spec.kind
    intended, out_of_scope = USES.get(kind, USES["single"])
    sections = [
        Section("Model", header=["", ""], rows=[
            ["name", f"{name} version {version}"], ["candidate", candidate], ["task", tags.get("chorus.task", spec.task)],
            ["kind", kind], ["labels", ", ".join(scorer.contract.labels)],
            ["aliases", ", ".join(_aliases(name, version)) or "none"]]),
        Section("Intended use", intended),
        Section("Out of scope", out_of_scope),
        _training_data(settings, spec, tracks, targets, tags),
        *_test_results(settings, spec, scorer, features, targets, tracks),
        _provenance(ctx, spec, tags, run_id),
        _decisions(ctx, name, version),
    ]
    return ModelCard(f"Model card: {name} v{version}", sections), run_id


def _aliases(name: str, version: int) -> list[str]:
    from mlflow import MlflowClient

    model = MlflowClient().get_registered_model(name)
    return sorted(alias for alias, v in (model.aliases or {}).items() if int(v) == version)


def _training_data(settings: ChorusSettings, spec: CandidateSpec, tracks: pd.DataFrame, targets: Any,
                   tags: dict[str, str]) -> Section:
    name = settings.train.task if spec.task in ("style", "hash") else settings.train.mood_task
    task = settings.tasks.get(name)
    if task is not None and task.source == "file":
        source = f"the annotation file {task.file}"
    else:
        source = f"the '{(task.column if task is not None else None) or name}' column of the tracks table"
    if spec.task == "mood" and (task is None or task.source == "voted"):
        lb = settings.labels
        source = (f"voted by the crowd over the follow graph (weighting {lb.weighting}, depth {lb.max_depth}, "
                  f"rule {lb.label_rule})")
    splits = ("train", "valid", "test")
    rows = []
    for i, label in enumerate(targets.labels):
        counts = [sum(1 for v in targets.splits[s].values() if (v[i] > 0 if np.ndim(v) else v == i)) for s in splits]
        rows.append([label, *counts])
    corpus = ", ".join(f"{source} ({n})" for source, n in tracks["source"].value_counts().items()) \
        if "source" in tracks.columns else "unknown"
    text = (f"Corpus: {len(tracks)} tracks from {corpus}. Labels: {source}. Features: configuration "
            f"{tags.get(registry.FEATURE_HASH_TAG, 'unknown')}; training key {tags.get(registry.TRAIN_KEY_TAG, 'unknown')}. "
            "Tracks per class (multi-label: positives per label) and split:")
    return Section("Training data", text, ["class", *splits], rows)


def _test_results(settings: ChorusSettings, spec: CandidateSpec, scorer: Scorer, features: FeatureSet, targets: Any,
                  tracks: pd.DataFrame) -> list[Section]:
    es = settings.evaluate
    result = score_candidate(scorer, features, targets.splits["test"], targets.labels, spec.kind, es.bootstrap, es.seed)
    value = result["value"]
    headline = Section("Results on the test split", f"Track level, 95% bootstrap intervals over {es.bootstrap} "
                       "resamples of tracks; the test split took no part in training or in choosing the model.",
                       ["metric", "value", "95% interval", "baseline", "baseline value"],
                       [[result["metric"], value["mean"], f"[{value['ci'][0]:.3f}, {value['ci'][1]:.3f}]",
                         result["baseline_name"], result["baseline"]]])
    if spec.kind == "hash":
        return [headline]
    track_ids = np.asarray(result["track_ids"], dtype=object)
    truth, scores = result["arrays"]
    if spec.kind == "single":
        per_track = single_label_results(track_ids, scores, truth, scorer.contract.labels, targets.labels)
        per_class = Section("Per class", header=["class", "precision", "recall", "F1", "test tracks"],
                            rows=[[c, r["precision"], r["recall"], r["f1"], r["support"]] for c, r in result["per_class"].items()])
        score, score_name = "correct", "accuracy"
    else:
        per_track = multi_label_results(track_ids, scores, truth, targets.labels)
        per_class = Section("Per label", header=["label", "test positives", "PR-AUC", "ROC-AUC"],
                            rows=[[label, r["positives"], r.get("pr_auc", ""), r.get("roc_auc", "")]
                                  for label, r in result["per_label"].items()])
        score, score_name = "average_precision", "mean average precision per track"
    described = per_track.merge(tracks[["track_id", "uri", "duration_s", *(["source"] if "source" in tracks else [])]],
                                on="track_id", how="left")
    level = features.segments.assign(level=features.logmel.reshape(len(features.logmel), -1).mean(1)) \
        .groupby("track_id")["level"].mean()
    described["duration"] = described["duration_s"].map(duration_bucket)
    described["loudness"] = loudness_buckets(described["track_id"].map(level).astype(float))
    slices = [Section(f"By {by}", header=[by, "test tracks", score_name], rows=slice_rows(described, by, score,
                                                                                     ORDERED_SLICES.get(by, ())))
              for by in ("duration", "loudness", "source") if by in described.columns]
    failures = Section("Known failure cases", "The most confident wrong predictions on the test split"
                       + (" (a false positive: the highest-scored label the track does not have)." if spec.kind == "multi" else "."),
                       ["track id", "file", "actual", "predicted", "confidence"], failure_rows(per_track, tracks))
    return [headline, per_class, *slices, failures]


def _provenance(ctx: StageContext, spec: CandidateSpec, tags: dict[str, str], run_id: str) -> Section:
    rows = [["MLflow run", run_id], ["git commit", tags.get("chorus.git_commit", "unknown")],
            ["device / precision", f"{tags.get('chorus.device', '?')} / {tags.get('chorus.precision', '?')}"],
            ["stored as", "MLflow model from code: JSON blueprint, safetensors weights, skops estimator (no pickle)"]]
    pretrained = spec.arch if family_of(spec).runtime == "pretrained" else ("MSD_musicnn" if "musicnn_msd" in spec.needs else "")
    if pretrained:
        record = ctx.state.pretrained / f"{pretrained}.json"
        if record.exists():
            source = json.loads(record.read_text())["source"]
            rows.append(["pretrained weights", f"{pretrained} from {source['wheel']} (SHA-256 {source['wheel_sha256'][:12]}...), "
                                               f"by {source['authors']}"])
            rows.append(["their licence", source["licence"]])
    return Section("Provenance", header=["", ""], rows=rows)


def _decisions(ctx: StageContext, name: str, version: int) -> Section:
    rows = [[d.get("time", ""), verdict(d), f"v{d.get('challenger')} vs "
             f"{'v' + str(d['champion']) if d.get('champion') else 'no champion'}", d.get("split", ""), d.get("reason", "")]
            for d in read_audit(ctx.state.promotions)
            if d.get("model") == name and version in (d.get("challenger"), d.get("champion"))]
    return Section("Gate decisions", "Every promotion decision that involved this version (audit/promotions.jsonl).",
                   ["time", "decision", "challenger vs champion", "decided on", "reason"], rows)
