"""The promote stage: each registered name's challenger and champion scored afresh, the name's
rule decides, aliases move and the decision is audited; and rolling a promotion back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException

from chorus import promotion, registry
from chorus.config import ChorusSettings
from chorus.errors import StaleFeaturesError, UnsafeModelError
from chorus.evaluation.scoring import gate_metrics, score_candidate
from chorus.families import CATALOGUE, resolve_candidates, task_targets
from chorus.label_tasks import MultiLabelTruth
from chorus.stages.context import StageContext, StageSummary
from chorus.stages.inputs import FeatureSets, mood_labels, training_tracks

GATE_BOOTSTRAP_ROUNDS = 200  # the interval says whether a first version beats the baseline and whether the split resolves a margin
HEADLINE = {"single": "accuracy", "multi": "macro_pr_auc", "hash": "map_at_10"}  # score_candidate's "value" per kind


@dataclass(frozen=True)
class GateScores:
    """A version's scores on the gate's split: the rule's metrics, the task's trivial baseline, the
    task kind, and the 95% interval of the headline metric (the rule's primary by default)."""

    metrics: dict[str, float]
    baseline: float
    kind: str
    interval: tuple[float, float]
    baseline_upper: float | None = None  # where trivial models vary: the 97.5th percentile of their scores


def score_version(settings: ChorusSettings, name: str, version: int, feature_sets: FeatureSets, tracks: pd.DataFrame,
                  moods: MultiLabelTruth) -> GateScores:
    """Fresh scores of a registered version on ``promote.split`` (never test) with the current
    features (of the configuration it reads) and labels. Raises when the version cannot be
    scored here (other features, incompatible code)."""
    scorer = registry.load_scorer(name, version)
    features = feature_sets.for_contract(scorer.contract)
    scorer.contract.check_features(features.config_hash)
    spec = CATALOGUE[scorer.contract.candidate]
    targets = task_targets(spec.task, tracks, settings.train, moods)
    result = score_candidate(scorer, features, targets.splits[settings.promote.split], targets.labels, spec.kind,
                             GATE_BOOTSTRAP_ROUNDS, settings.evaluate.seed)
    low, high = result["value"]["ci"]
    upper = result["baseline_interval"][1] if "baseline_interval" in result else None
    return GateScores(gate_metrics(result, spec.kind), float(result["baseline"]), spec.kind, (float(low), float(high)),
                      upper)


def _already_decided(name: str, challenger: int, champion: int | None) -> str | None:
    """Why a challenger needs no new decision: decided against this same champion already."""
    tags = registry.version_tags(name, challenger)
    if tags.get("chorus.promotion.champion_before") == str(champion) and \
            tags.get("chorus.promotion.decision") in ("promoted", "refused"):
        return f"v{challenger} already {tags['chorus.promotion.decision']}"
    return None


def _decide(settings: ChorusSettings, name: str, challenger: int, champion: int | None, features: FeatureSets,
            tracks: pd.DataFrame, moods: MultiLabelTruth) -> promotion.Decision:
    scores = score_version(settings, name, challenger, features, tracks, moods)
    rule = settings.promote.rule_for(name, scores.kind)
    champion_metrics, problem = None, None
    if champion is not None:
        try:
            champion_metrics = score_version(settings, name, champion, features, tracks, moods).metrics
        except (StaleFeaturesError, UnsafeModelError, ImportError, AttributeError, KeyError, MlflowException) as exc:
            problem = (f"champion v{champion} cannot be scored on the current data ({type(exc).__name__}: {exc}); "
                       "it is judged against the trivial baseline instead")
    # the interval is of the headline metric; it bounds the rule's primary when that is the headline
    interval = scores.interval if rule.primary == HEADLINE[scores.kind] else None
    return promotion.decide(name, challenger, scores.metrics, scores.baseline, rule, champion, champion_metrics, problem,
                            settings.promote.split, interval, settings.promote.force, scores.baseline_upper)


def promote_stage(settings: ChorusSettings, dry_run: bool = False, trigger: str = "manual",
                  names: list[str] | None = None) -> StageSummary:
    """For each registered name with a challenger that is not the champion: score challenger and
    champion afresh on ``promote.split`` (valid; the test split only reports), decide by the
    name's rule, move aliases (unless a dry run) and audit. A challenger already decided against
    the same champion is not re-decided."""
    ctx = StageContext.open(settings, uses_registry=True, stage="promote")
    ts = settings.train
    if names is None:
        names = sorted({ts.registered_name(s.registered_task(ts)) for s in resolve_candidates(list(ts.selected))
                        if s.task not in ("pretext", "tags")})  # a pretrained tagger serves as registered
    tracks = training_tracks(settings)
    moods = mood_labels(settings, tracks)
    ids = tracks.loc[tracks["split"] == settings.promote.split, "track_id"].tolist()
    features = FeatureSets(ctx.state.features, settings.features, ids)
    decisions: dict[str, Any] = {}
    for name in names:
        challenger = registry.alias_version(name, promotion.CHALLENGER)
        champion = registry.alias_version(name, promotion.CHAMPION)
        if challenger is None or challenger == champion:
            decisions[name] = {"decided": False, "reason": "no challenger" if challenger is None else "challenger is champion"}
            continue
        decided = None if dry_run else _already_decided(name, challenger, champion)
        if decided:
            decisions[name] = {"decided": False, "reason": decided}
            continue
        decision = _decide(settings, name, challenger, champion, features, tracks, moods)
        decision.dry_run, decision.trigger = dry_run, trigger
        promotion.apply(decision, ctx.state.promotions)
        decisions[name] = {"decided": True, **decision.as_dict()}
    acted = [d for d in decisions.values() if d["decided"]]
    counts = {"decisions": decisions, "promoted": sum(d["promote"] and not d["dry_run"] for d in acted),
              "refused": sum(not d["promote"] for d in acted)}
    return ctx.summary("promote", not acted, {"audit": str(ctx.state.promotions)}, counts)


def rollback_stage(settings: ChorusSettings, name: str) -> dict[str, Any]:
    ctx = StageContext.open(settings, uses_registry=True)
    return promotion.rollback(name, ctx.state.promotions).as_dict()
