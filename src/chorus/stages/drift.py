"""The drift stage: a batch of audio against the champion's training tracks
(``chorus.evaluation.drift``). The batch is the tracks the last ingest added, or audio files and
folders given (extracted on the fly, within ingest's limits). Writes the drift report (HTML and
JSON) under reports/drift/ and the Data Docs folder, and a ``drift`` section in
reports/metrics.json."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from chorus import registry
from chorus.audio import AudioProblem
from chorus.config import ChorusSettings
from chorus.evaluation.drift import compare, drift_html, track_summaries
from chorus.features import FeatureSet, extract_track
from chorus.ingest import probe_within_limits
from chorus.io import write_json_atomic, write_text_atomic
from chorus.models.scorer import Scorer
from chorus.stages.context import StageContext, StageSummary, log, update_metrics
from chorus.stages.inputs import FeatureSets, load_tracks
from chorus.tagging import audio_files, model_feature_settings
from chorus.training import track_mean


def drift_stage(settings: ChorusSettings, paths: list[str] | None = None) -> StageSummary:
    """Compare a batch with the training tracks of ``train.model_name``'s champion; skipped (with
    the reason) when there is no champion or the batch is smaller than ``drift.min_tracks``."""
    ctx = StageContext.open(settings, uses_registry=True, stage="drift")
    state, ds = ctx.state, settings.drift
    name = settings.train.model_name
    version = registry.alias_version(name, "champion")
    if version is None:
        return ctx.summary("drift", True, {}, {"reason": f"no champion of {name} to compare with"})
    scorer = registry.load_scorer(name, version)
    tracks = load_tracks(settings)
    if paths:
        batch, batch_classes, source = _batch_from_files(settings, scorer, name, version, paths)
        batch_ids: set[str] = set()
    else:
        added = json.loads(state.ingest_batch.read_text())["added"] if state.ingest_batch.exists() else []
        batch_ids = set(added) & set(tracks["track_id"])
        batch, batch_classes = _stored(settings, state.features, scorer, tracks, sorted(batch_ids))
        source = f"the {len(batch_ids)} tracks the last ingest added"
    if len(batch) < ds.min_tracks:
        return ctx.summary("drift", True, {}, {"reason": f"{len(batch)} batch tracks (< drift.min_tracks={ds.min_tracks})",
                                               "batch": source})
    reference_ids = sorted(set(tracks.loc[tracks["split"] == "train", "track_id"]) - batch_ids)
    if len(reference_ids) < ds.min_tracks:  # e.g. a first ingest: every track is new
        return ctx.summary("drift", True, {}, {"reason": f"{len(reference_ids)} training tracks outside the batch "
                                                         f"(< drift.min_tracks={ds.min_tracks})", "batch": source})
    reference, reference_classes = _stored(settings, state.features, scorer, tracks, reference_ids)
    result = compare(reference, batch, reference_classes, batch_classes, ds.fdr, ds.threshold)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = state.reports / "drift" / f"drift-{stamp}.html"
    title = f"chorus drift watch: {source} vs {name} v{version}'s training tracks"
    write_text_atomic(report, drift_html(result, title))
    record = {**result.as_dict(), "time": stamp, "model": name, "version": version, "batch": source, "report": str(report),
              "tests_table": result.tests.round(6).to_dict(orient="records")}
    write_json_atomic(report.with_suffix(".json"), record)
    docs = state.data_docs / "drift" / report.name
    docs.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(report, docs)
    update_metrics(state.metrics, "drift", {k: v for k, v in record.items() if k != "tests_table"})
    log.info("drift: %s", {k: record[k] for k in ("alarm", "drifted_share", "drifted")})
    return ctx.summary("drift", False, {"report": str(report), "data_docs": str(docs)},
                       {"alarm": result.alarm, "drifted_share": round(result.drifted_share, 4), "drifted": record["drifted"],
                        "batch_tracks": len(batch), "reference_tracks": len(reference), "batch": source})


def _summaries(features: FeatureSet, tracks: pd.DataFrame, n_mfcc: int) -> pd.DataFrame:
    summary = track_summaries(features.segments["track_id"].to_numpy(), features.logmel, features.mfcc_stats, n_mfcc)
    return summary.join(tracks.set_index("track_id")["duration_s"])


def _classes(scorer: Scorer, features: FeatureSet) -> pd.Series:
    """The champion's predicted class of each track (the mean of its segments' scores)."""
    x = np.stack([features.maps[m] for m in scorer.contract.stored_maps], axis=1)
    ids, scores = track_mean(scorer.scores(x), features.segments["track_id"].to_numpy())
    return pd.Series([scorer.contract.labels[i] for i in scores.argmax(1)], index=ids)


def _stored(settings: ChorusSettings, root: Path, scorer: Scorer, tracks: pd.DataFrame,
            track_ids: list[str]) -> tuple[pd.DataFrame, pd.Series]:
    """Summaries (main features) and predicted classes (the champion's features) of stored tracks."""
    if not track_ids:
        return pd.DataFrame(), pd.Series(dtype=str)
    sets = FeatureSets(root, settings.features, track_ids)  # one load when the champion reads the main features
    return _summaries(sets.of(settings.features), tracks, settings.features.n_mfcc), _classes(scorer, sets.for_contract(scorer.contract))


def _batch_from_files(settings: ChorusSettings, scorer: Scorer, name: str, version: int,
                      paths: list[str]) -> tuple[pd.DataFrame, pd.Series, str]:
    files = audio_files([Path(p).expanduser() for p in paths])
    model_settings = model_feature_settings(name, version)
    rows, classes = [], {}
    for path in files:
        try:
            info = probe_within_limits(path, settings.ingest)
            main = extract_track(path.stem, str(path), settings.features)
            model = main if model_settings.config_hash() == settings.features.config_hash() else \
                extract_track(path.stem, str(path), model_settings)
        except AudioProblem as problem:
            log.info("drift: %s left out (%s: %s)", path, problem.reason, problem.detail)
            continue
        summary = track_summaries(np.array([str(path)] * len(main.logmel)), main.logmel, main.mfcc_stats,
                                  settings.features.n_mfcc)
        rows.append(summary.assign(duration_s=info.duration_s))
        x = np.stack([model.maps[m] for m in scorer.contract.stored_maps], axis=1)
        classes[str(path)] = scorer.contract.labels[int(scorer.scores(x).mean(0).argmax())]
    batch = pd.concat(rows) if rows else pd.DataFrame()
    return batch, pd.Series(classes), f"{len(files)} audio files under {', '.join(paths)}"
