"""The evaluate stage: the candidates of a training (default: the champions) scored on the
held-out split; the report of the subject model (HTML) and ``reports/metrics.json``, both logged
to MLflow."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from chorus import registry
from chorus.config import ChorusSettings, stable_hash
from chorus.errors import ChorusError, InputError, StaleFeaturesError, UnsafeModelError
from chorus.evaluation import render_report
from chorus.evaluation.report import (
    embedding_plot,
    evaluation_protocol,
    multilabel_curves_plot,
)
from chorus.evaluation.scoring import planted_mood_scores, score_candidate, tag_prior_scores
from chorus.families import CATALOGUE, TaskTargets, task_targets
from chorus.features import FeatureSet
from chorus.io import write_json_atomic, write_text_atomic
from chorus.label_tasks import MultiLabelTruth
from chorus.metrics.retrieval import compression_curve, retrieval_table
from chorus.models.scorer import Scorer
from chorus.promotion import read_audit, verdict
from chorus.social.tags import TagMapper, normalise_tag
from chorus.stages.context import (
    StageContext,
    StageSummary,
    git_commit,
    log,
    read_metrics,
)
from chorus.stages.inputs import FeatureSets, current_index_meta, mood_labels, stored_features_keys, training_tracks
from chorus.stages.model_card import write_card
from chorus.state import StateDir
from chorus.training import segment_split

COMPRESSION_DIMS = (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 1690)


@dataclass
class Evaluation:
    """What one evaluation reads: the subject model (the version the report describes), the
    held-out tracks and features, and the candidates scored beside it."""

    settings: ChorusSettings
    state: StateDir
    subject_name: str
    task: str
    multi: bool
    champion: int | None
    subject: int
    scorer: Scorer
    unscorable: str | None
    tracks: pd.DataFrame
    feature_sets: FeatureSets
    moods: MultiLabelTruth
    evaluated: dict[str, dict[str, Any]]
    candidates: dict[str, dict[str, Any]]
    voting: dict[str, Any] | None
    search_check: dict[str, Any] | None
    melody: dict[str, Any] | None = None  # the melody stage's judging (reports/melody.json)
    personal: dict[str, Any] | None = None  # the personal stage's judging (reports/personal.json)
    targets: dict[str, TaskTargets] = field(default_factory=dict)

    @property
    def features(self) -> FeatureSet:
        """The held-out features of the configuration the report's subject reads."""
        return self.feature_sets.for_contract(self.scorer.contract)

    @property
    def folder(self) -> Path:
        return self.state.reports / f"{self.subject_name}-v{self.subject}"

    def targets_of(self, family: str) -> TaskTargets:
        if family not in self.targets:
            self.targets[family] = task_targets(family, self.tracks, self.settings.train, self.moods)  # type: ignore[arg-type]
        return self.targets[family]

    def key(self) -> str:
        ts, es = self.settings.train, self.settings.evaluate
        return stable_hash({"champion": self.champion, "subject": self.subject, "candidates": self.evaluated,
                            "evaluate": es.config_hash(), "voting": self.voting,
                            "features": stored_features_keys(self.state.features, self.settings.features),
                            "search": (self.search_check or {}).get("key"), "moods": self.moods.digest(),
                            "melody": (self.melody or {}).get("key"), "personal": (self.personal or {}).get("key"),
                            "tracks": stable_hash(self.tracks[[c for c in ("track_id", "split", ts.task) if c in self.tracks.columns]]
                                                  .astype(str).values.tolist())})


def _open_evaluation(ctx: StageContext, candidates: dict[str, dict[str, Any]]) -> Evaluation:
    settings, state = ctx.settings, ctx.state
    es, ts = settings.evaluate, settings.train
    multi = es.subject == "multi"
    # the model the report describes: the single-label task's, or the multi-label task's
    subject_name, task = (ts.registered_name(ts.mood_task), ts.mood_task) if multi else (ts.model_name, ts.task)
    champion = registry.alias_version(subject_name, es.alias)
    tracks = training_tracks(settings)
    held_out = tracks.loc[tracks["split"] == es.split, "track_id"].tolist()
    feature_sets = FeatureSets(state.features, settings.features, held_out)
    subject, scorer, unscorable = _report_subject(subject_name, champion, candidates, feature_sets)
    evaluated = {k: {"registered": v["registered"], "version": v["version"]} for k, v in sorted(candidates.items())
                 if CATALOGUE[k].task not in ("pretext", "tags")}  # no split of this corpus is labelled with a tagger's tags
    return Evaluation(settings, state, subject_name, task, multi, champion, subject, scorer, unscorable, tracks, feature_sets,
                      mood_labels(settings, tracks), evaluated, candidates, read_metrics(state.metrics).get("voting"),
                      current_index_meta(settings), _judged(state, "melody.json"), _judged(state, "personal.json"))


def evaluate_stage(settings: ChorusSettings, candidates: dict[str, dict[str, Any]] | None = None) -> StageSummary:
    """Score the candidates of a training (default: the champions) on the held-out split; write
    ``reports/<model>-v<N>/report.html`` for the subject model and ``reports/metrics.json`` with
    every candidate; log both to MLflow."""
    ctx = StageContext.open(settings, uses_registry=True, stage="evaluate")
    ev = _open_evaluation(ctx, candidates or {})
    key = ev.key()
    report_path, model_metrics_path = ev.folder / "report.html", ev.folder / "metrics.json"
    outputs = {"report": str(report_path), "metrics": str(ctx.state.metrics)}
    if model_metrics_path.exists() and report_path.exists():
        previous = json.loads(model_metrics_path.read_text())
        if previous.get("key") == key:
            _update_summary(ctx.state.metrics, previous)
            headline = previous.get("headline", "accuracy")
            return ctx.summary("evaluate", True, outputs, {headline: previous[headline], "version": ev.subject})

    scored = _score_candidates(ev)
    subject_result = _subject_result(ev, scored)
    run_id = registry.run_id_of(ev.subject_name, ev.subject)
    protocol = evaluation_protocol(ev.tracks, ev.multi)
    retrieval = {} if ev.multi or settings.train.task not in ev.tracks.columns else _retrieval_and_compression(ev, scored.hash_scorers)
    if retrieval:
        scored.figures.append(("Semantic vectors in 2-D", retrieval.pop("plot")))
    headline, summary_metrics, mlflow_metrics, notes = _headline(ev, subject_result)
    notes.append(_support_note(ev))
    mood_prior = _mood_prior(ev)
    notes += [_mood_prior_note(mood_prior)] if mood_prior.get("moods") else []
    cards = _write_cards(ctx, ev, scored.scorers)
    html = render_report(f"chorus evaluation: {ev.subject_name} v{ev.subject}", _facts(ev, protocol, run_id, key),
                         subject_result.get("classification"), _run_history(run_id),
                         tagging=subject_result if ev.multi else None, protocol=protocol, voting=ev.voting,
                         retrieval=retrieval, search=ev.search_check, melody=ev.melody, personal=ev.personal,
                         figures=scored.figures,
                         promotion=_latest_decision(ctx.state, ev.subject_name), candidates=scored.rows, cards=cards, notes=[
        "Scores are on the demo corpus unless configured otherwise; the article's reported figures are on data we do not have.",
        *notes, *([ev.unscorable] if ev.unscorable else []),
    ])
    write_text_atomic(report_path, html)
    record = {"key": key, "run_id": run_id, "model": ev.subject_name, "version": ev.subject, "champion": ev.champion,
              "task": ev.task, "kind": "multi" if ev.multi else "single", "headline": headline["metric"],
              "protocol": protocol, "candidate": ev.scorer.contract.candidate, "split": settings.evaluate.split,
              **summary_metrics, **headline, "candidates": scored.per_candidate, "retrieval": retrieval,
              "search": ev.search_check, "mood_prior": mood_prior}
    write_json_atomic(model_metrics_path, record)
    registry.log_report(run_id, [report_path, model_metrics_path], mlflow_metrics)
    _update_summary(ctx.state.metrics, record)
    return ctx.summary("evaluate", False, outputs, {
        headline["metric"]: round(headline[headline["metric"]], 4), "n": headline["n"], "version": ev.subject,
        "candidates": {k: round(v["value"]["mean"], 4) for k, v in scored.per_candidate.items()}})


def _judged(state: StateDir, name: str) -> dict[str, Any] | None:
    """A stage's own judging, written under reports/ (melody.json, personal.json)."""
    path = state.reports / name
    return json.loads(path.read_text()) if path.exists() else None


def _write_cards(ctx: StageContext, ev: Evaluation, scorers: dict[str, Scorer]) -> list[tuple[str, str]]:
    """The card of the reported model and of each evaluated candidate (``scorers``: theirs, as
    evaluate loaded them): (model, link relative to the report). A version that cannot be scored
    here (e.g. trained on other features) has none."""
    versions: dict[tuple[str, int], Scorer | None] = {(ev.subject_name, ev.subject): ev.scorer}
    for name, info in ev.evaluated.items():
        versions.setdefault((info["registered"], int(info["version"])), scorers.get(name))
    cards = []
    for (name, version), scorer in versions.items():
        try:
            page = write_card(ctx, name, version, ev.tracks, scorer)
        except (ChorusError, ValueError) as error:
            log.info("no card for %s v%s: %s", name, version, error)
            continue
        cards.append((f"{name} v{version}", os.path.relpath(page, ev.folder)))
    return cards


@dataclass
class ScoredCandidates:
    """Each candidate's result, its row in the report's table and in metrics.json, its figures."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    per_candidate: dict[str, Any] = field(default_factory=dict)
    scorers: dict[str, Scorer] = field(default_factory=dict)
    figures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def hash_scorers(self) -> dict[str, Scorer]:
        return {name: scorer for name, scorer in self.scorers.items() if CATALOGUE[name].kind == "hash"}


DETAIL_KEYS = ("track_ids", "confusion", "per_class", "arrays", "classification")


def _score_candidates(ev: Evaluation) -> ScoredCandidates:
    es, ts = ev.settings.evaluate, ev.settings.train
    scored = ScoredCandidates()
    for name, info in ev.evaluated.items():
        spec = CATALOGUE[name]
        candidate = registry.load_scorer(info["registered"], info["version"])
        features = ev.feature_sets.for_contract(candidate.contract)
        candidate.contract.check_features(features.config_hash)
        targets = ev.targets_of(spec.task)
        result = score_candidate(candidate, features, targets.splits[es.split], targets.labels, spec.kind,
                                 es.bootstrap, es.seed)
        scored.results[name], scored.scorers[name] = result, candidate
        if spec.task == "mood" and "mood" in ev.tracks.columns:
            result["planted_mood"] = planted_mood_scores(candidate, features, ev.tracks, es.split, es.bootstrap, es.seed)
        if spec.kind == "multi":
            truth, scores = result["arrays"]
            scored.figures.append((f"{name}: PR and ROC curves, per-label PR-AUC", multilabel_curves_plot(truth, scores, targets.labels)))
        scored.per_candidate[name] = {
            "task": spec.registered_task(ts), "registered": info["registered"], "version": info["version"],
            **{k: v for k, v in result.items() if k not in DETAIL_KEYS},
            **({"confusion": result["confusion"], "per_class": result["per_class"]} if "confusion" in result else {})}
        scored.rows.append({"candidate": name, "registered": f"{info['registered']} v{info['version']}",
                            "task": spec.registered_task(ts), "metric": result["metric"], "value": result["value"],
                            "baseline_name": result["baseline_name"], "baseline": result["baseline"],
                            "valid_score": ev.candidates[name].get("valid_score") or float("nan")})
    return scored


def _subject_result(ev: Evaluation, scored: ScoredCandidates) -> dict[str, Any]:
    """The report's subject, scored like every candidate (once, if it is one of them)."""
    found = next((scored.results[n] for n, info in ev.evaluated.items()
                  if info["registered"] == ev.subject_name and info["version"] == ev.subject), None)
    if found is not None:
        return found
    es = ev.settings.evaluate
    targets = ev.targets_of("mood" if ev.multi else "style")
    return score_candidate(ev.scorer, ev.features, targets.splits[es.split], targets.labels,
                           "multi" if ev.multi else "single", es.bootstrap, es.seed)


def _headline(ev: Evaluation, result: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, float], list[str]]:
    """(headline, summary metrics, MLflow metrics, report notes) of the subject's result."""
    split = ev.settings.evaluate.split
    if ev.multi:
        headline = {"metric": "macro_pr_auc", "macro_pr_auc": result["macro_pr_auc"]["mean"],
                    "macro_roc_auc": result["macro_roc_auc"], "n": result["n"],
                    "prevalence_baseline": result["prevalence_baseline"], "labels": list(ev.scorer.contract.labels)}
        summary = {k: v for k, v in result.items() if k not in ("track_ids", "arrays", "value", "metric", "baseline",
                                                                "baseline_name")}
        mlflow_metrics = {f"{split}_macro_pr_auc": headline["macro_pr_auc"], f"{split}_macro_roc_auc": headline["macro_roc_auc"]}
        notes = [f"Prevalence baseline (macro PR-AUC of constant scores): {headline['prevalence_baseline']:.3f}; "
                 "ROC-AUC of constant scores is 0.5."]
        return headline, summary, mlflow_metrics, notes
    metrics = result["classification"]
    mlflow_metrics = {f"{split}_accuracy": metrics.accuracy, f"{split}_balanced_accuracy": metrics.balanced_accuracy}
    return ({"metric": "accuracy", **metrics.as_dict()}, metrics.as_dict(), mlflow_metrics,
            [f"Majority-class baseline: {metrics.majority_baseline:.3f}."])


def _facts(ev: Evaluation, protocol: dict[str, Any], run_id: str, key: str) -> dict[str, Any]:
    """The report's 'What was evaluated' table."""
    return {
        "model": f"{ev.subject_name} version {ev.subject} ({ev.scorer.contract.candidate})", "task": ev.task,
        "protocol": protocol["name"], "split": ev.settings.evaluate.split,
        "promotion decided on": str((_latest_decision(ev.state, ev.subject_name) or {}).get("split", "no decision")),
        "aliases": f"champion = v{ev.champion}" if ev.champion else "no champion", "MLflow run": run_id,
        "promotion": _last_promotion(ev.state, ev.subject_name), "feature config hash": ev.features.config_hash,
        "evaluation key": key, "git commit": git_commit(),
    }


def _retrieval_and_compression(ev: Evaluation, hash_scorers: dict[str, Scorer]) -> dict[str, Any]:
    """Retrieval on the held-out segments (semantic vectors of the reported style model, codes of
    each hash model, LSH and PCA+rotation of the semantic vectors at the same bits; relevant =
    same style) and the compression curve of the semantic vectors (PCA fit on train)."""
    settings, scorer = ev.settings, ev.scorer
    targets = task_targets("style", ev.tracks, settings.train)
    test = segment_split(ev.features, scorer.contract.stored_maps, targets.splits[settings.evaluate.split])
    train_features = FeatureSets(ev.state.features, settings.features, list(targets.splits["train"])).for_contract(scorer.contract)
    train = segment_split(train_features, scorer.contract.stored_maps, targets.splits["train"])
    if len(test) < 2 or len(train) < 2:  # a query needs at least one other item
        return {}
    train_vectors, test_vectors = scorer.embed(train.x), scorer.embed(test.x)
    # codes beside the vectors of the same segments: hash models of another feature configuration
    # (its own segment grid) are scored in the candidates' table only
    codes = {name: h.scores(test.x) for name, h in sorted(hash_scorers.items())
             if h.contract.feature_config_hash == scorer.contract.feature_config_hash}
    table = retrieval_table(train_vectors, test_vectors, test.y, test.track_ids, codes, k=10, seed=settings.evaluate.seed,
                            rerank_candidates=settings.search.rerank_candidates)
    dims = [d for d in COMPRESSION_DIMS if d <= train_vectors.shape[1]]
    table["compression"] = compression_curve(train_vectors, train.y, test_vectors, test.y, dims, settings.evaluate.seed)
    table["semantic_model"] = f"{scorer.contract.candidate} (penultimate layer, {train_vectors.shape[1]} dims)"
    table["plot"] = embedding_plot(test_vectors, [targets.labels[int(i)] for i in test.y])
    table["classes"] = int(len(np.unique(test.y)))
    return table


def _support_note(ev: Evaluation) -> str:
    """Each class's (or label's) tracks in every split: a small class's interval reads differently."""
    targets = ev.targets_of("mood" if ev.multi else "style")
    counts = {split: (np.sum(list(rows.values()), axis=0) if ev.multi else np.bincount(list(rows.values()), minlength=len(targets.labels)))
              if rows else np.zeros(len(targets.labels), int) for split, rows in targets.splits.items()}
    support = ", ".join(f"{label} {'/'.join(str(int(counts[s][j])) for s in ('train', 'valid', 'test'))}"
                        for j, label in enumerate(targets.labels))
    return f"Tracks per {'label' if ev.multi else 'class'} (train/valid/test): {support}."


def _mood_prior(ev: Evaluation) -> dict[str, Any]:
    """The MSD tagger's mood tags as a prior for tracks the crowd has not tagged, judged on the
    held-out tracks' labels of the multi-label task (empty without the tagger or the labels)."""
    ts, es = ev.settings.train, ev.settings.evaluate
    name = ts.registered_name(CATALOGUE["musicnn_msd"].registered_task(ts))
    version = registry.alias_version(name, "champion")
    if version is None or not ev.moods.labels:
        return {}
    tagger = registry.load_scorer(name, version)
    targets = ev.targets_of("mood")
    mapper = TagMapper.load(ev.settings.labels.synonyms_file)
    return {"model": f"{name} v{version}", **tag_prior_scores(
        tagger, ev.feature_sets.for_contract(tagger.contract), targets.splits[es.split], targets.labels,
        lambda tag: mapper.synonyms.get(normalise_tag(tag)), es.bootstrap, es.seed)}


def _mood_prior_note(prior: dict[str, Any]) -> str:
    moods = "; ".join(f"{m} (from {', '.join(r['tags'])}): PR-AUC {r['pr_auc']['mean']:.3f} "
                      f"[{r['pr_auc']['ci'][0]:.3f}, {r['pr_auc']['ci'][1]:.3f}] against prevalence {r['prevalence']:.3f}"
                      for m, r in prior["moods"].items())
    return (f"Cold-start prior: the moods {prior['model']}'s tags reach through the synonym table, scored on "
            f"{prior['n']} held-out tracks' labels: {moods}.")


def _latest_decision(state: StateDir, name: str) -> dict[str, Any] | None:
    rows = [r for r in read_audit(state.promotions) if r["model"] == name]
    return rows[-1] if rows else None


def _last_promotion(state: StateDir, name: str) -> str:
    last = _latest_decision(state, name)
    if last is None:
        return "no decision yet"
    return f"{last['time']}: v{last['challenger']} {verdict(last)} ({last['reason']})"


def _report_subject(name: str, champion: int | None, candidates: dict[str, dict[str, Any]],
                    feature_sets: FeatureSets) -> tuple[int, Scorer, str | None]:
    """The version the report describes: the champion, or, when the champion cannot be scored on
    the current features (trained on other features, or by an incompatible chorus), this run's
    best-validated candidate of the same name, with the reason."""
    if champion is None:
        reason = f"{name} has no champion (the promotion gate has not promoted a version)."
    else:
        try:
            scorer = registry.load_scorer(name, champion)
            scorer.contract.check_features(feature_sets.for_contract(scorer.contract).config_hash)
            return champion, scorer, None
        except (StaleFeaturesError, UnsafeModelError, ImportError, AttributeError, MlflowException) as exc:
            reason = f"The champion (v{champion}) cannot be scored on the current features: {exc}"
    mine = [row for row in candidates.values() if row["registered"] == name]
    if not mine:
        raise InputError(f"models:/{name}@champion", reason)
    best = max(mine, key=lambda r: float(r["valid_score"]) if r.get("valid_score") is not None else -1.0)
    log.warning("%s; reporting on this run's best candidate v%s instead", reason, best["version"])
    return best["version"], registry.load_scorer(name, best["version"]), reason + f" This report describes v{best['version']}."


def _run_history(run_id: str) -> list[dict[str, float]]:
    client = MlflowClient()
    rows: dict[int, dict[str, float]] = {}
    for name in ("train_loss", "valid_score"):
        for metric in client.get_metric_history(run_id, name):
            rows.setdefault(metric.step, {"epoch": metric.step})[name] = metric.value
    return [rows[k] for k in sorted(rows)]


def _update_summary(path: Path, record: dict[str, Any]) -> None:
    """reports/metrics.json: {"run_id": ..., "models": {name: {task, accuracy, ...}}}."""
    summary = read_metrics(path)
    summary["run_id"] = record["run_id"]
    headline = ("accuracy", "balanced_accuracy", "majority_baseline", "classes", "confusion") \
        if record.get("kind", "single") == "single" else ("macro_pr_auc", "macro_roc_auc", "prevalence_baseline", "labels")
    summary.setdefault("models", {})[record["model"]] = {
        "task": record["task"], "version": record["version"], "run_id": record["run_id"], "split": record["split"],
        "n": record["n"], **{k: record[k] for k in headline}, "candidate": record.get("candidate"),
        "protocol": (record.get("protocol") or {}).get("name"),
        "report": str(path.parent / f"{record['model']}-v{record['version']}" / "report.html"),
    }
    if record.get("candidates"):
        summary["candidates"] = record["candidates"]
    write_json_atomic(path, summary)
