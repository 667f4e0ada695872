"""The promotion gate: a challenger replaces a champion only when it beats it on fresh scores.

Pure decisions over metric dicts (``decide``) and the MLflow alias moves and audit records that
carry them out (``apply``, ``rollback``). Aliases: ``challenger`` (the newest candidate of a
name), ``champion`` (what serves), ``previous-champion`` (what a rollback restores). Every
decision, dry runs included, is kept: as tags on the challenger's model version and as a row of
``<state>/audit/promotions.jsonl``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chorus import registry
from chorus.config import PromotionRule
from chorus.errors import InputError
from chorus.io import append_jsonl

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"


@dataclass
class Decision:
    model: str
    challenger: int
    champion: int | None
    promote: bool
    reason: str
    rule: dict[str, Any]
    challenger_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None = None
    baseline: float | None = None
    baseline_upper: float | None = None
    dry_run: bool = False
    trigger: str = "manual"
    split: str = "valid"  # the split that decided; the report's headline is on another (test)
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    action: str = "promote"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verdict(record: dict[str, Any]) -> str:
    """One wording of a decision (a ``Decision.as_dict()`` or an audit row) for tags, the report
    and the terminal."""
    if record.get("action") == "rollback":
        return "rollback"
    if record["dry_run"]:
        return "dry-run: would " + ("promote" if record["promote"] else "refuse")
    return "promoted" if record["promote"] else "refused"


def decide(model: str, challenger: int, challenger_metrics: dict[str, float], baseline: float,
           rule: PromotionRule, champion: int | None = None, champion_metrics: dict[str, float] | None = None,
           champion_problem: str | None = None, split: str = "valid", interval: tuple[float, float] | None = None,
           force: bool = False, baseline_upper: float | None = None) -> Decision:
    """Promote when the primary metric improves on the champion's by at least
    ``rule.min_improvement`` and no guard metric falls more than its tolerance. Without a
    champion (or with one that cannot be scored on the current data, ``champion_problem``) the
    challenger must beat the task's trivial baseline (what a model that learned nothing scores on
    the same metric and split): the lower end of its 95% ``interval`` above the baseline, or the
    point estimate when the primary has no interval. Where trivial models vary (random codes),
    ``baseline`` is their mean and ``baseline_upper`` the 97.5th percentile of their scores on the
    same split, and the point estimate must also lie above it: a one-sided test at 2.5% against
    models that learned nothing, which the bootstrap interval over tracks alone does not give. A
    promotion over a champion also needs ``split`` large enough to resolve the margin: the challenger's 95%
    ``interval`` on the primary metric no wider than ``min_improvement`` either side (``force``
    promotes anyway)."""
    primary = rule.primary
    value = challenger_metrics[primary]
    common: dict[str, Any] = {"model": model, "challenger": challenger, "champion": champion, "rule": rule.model_dump(),
                              "challenger_metrics": challenger_metrics, "champion_metrics": champion_metrics,
                              "baseline": baseline, "baseline_upper": baseline_upper, "split": split}
    if champion is None or champion_problem is not None:
        lead = "no champion yet" if champion is None else champion_problem
        if interval is None:  # the rule's primary has no interval: its point estimate must beat the baseline
            if value > baseline:
                return Decision(promote=True, reason=f"{lead}; {primary} {value:.4f} beats the trivial baseline "
                                                     f"{baseline:.4f}", **common)
            return Decision(promote=False, reason=f"{lead}; {primary} {value:.4f} does not beat the trivial baseline "
                                                  f"{baseline:.4f}", **common)
        low = interval[0]
        if low <= baseline:
            return Decision(promote=False, reason=f"{lead}; {primary} {value:.4f} is not above the trivial baseline "
                                                  f"{baseline:.4f} with confidence: its 95% interval starts at {low:.4f}",
                            **common)
        if baseline_upper is not None and value <= baseline_upper:
            return Decision(promote=False, reason=f"{lead}; {primary} {value:.4f} is within what trivial models reach on "
                                                  f"this split: 2.5% of them score above {baseline_upper:.4f} (mean "
                                                  f"{baseline:.4f})", **common)
        beyond = "" if baseline_upper is None else f", and above 97.5% of trivial models ({baseline_upper:.4f})"
        return Decision(promote=True, reason=f"{lead}; {primary} {value:.4f}, 95% interval from {low:.4f}, lies above "
                                             f"the trivial baseline {baseline:.4f}{beyond}", **common)
    assert champion_metrics is not None
    gain = value - champion_metrics[primary]
    if gain < rule.min_improvement:
        return Decision(promote=False, reason=f"primary {primary}: {value:.4f} vs champion {champion_metrics[primary]:.4f} "
                                             f"(gain {gain:+.4f} < required {rule.min_improvement:+.4f})", **common)
    for guard, tolerance in rule.guards.items():
        drop = champion_metrics[guard] - challenger_metrics[guard]
        if drop > tolerance:
            return Decision(promote=False, reason=f"guard {guard} regressed: {challenger_metrics[guard]:.4f} vs champion "
                                                 f"{champion_metrics[guard]:.4f} (drop {drop:.4f} > tolerance {tolerance:.4f})",
                            **common)
    half_width = (interval[1] - interval[0]) / 2 if interval else 0.0
    if half_width > rule.min_improvement and not force:
        return Decision(promote=False, reason=f"the {split} split is too small to resolve the required gain: {primary}'s 95% "
                                             f"interval is +-{half_width:.4f}, wider than {rule.min_improvement:+.4f}; the "
                                             "champion stays (promote.force overrides)", **common)
    forced = " (promote.force: the split cannot resolve the margin)" if half_width > rule.min_improvement else ""
    return Decision(promote=True, reason=f"primary {primary} gain {gain:+.4f} >= {rule.min_improvement:+.4f}; guards held"
                                         f"{forced}", **common)


def audit(log_path: Path, decision: Decision) -> None:
    """Append the decision as one JSON line (fsynced: an audit row must survive a crash)."""
    append_jsonl(log_path, decision.as_dict())


def read_audit(log_path: Path) -> list[dict[str, Any]]:
    if not log_path.exists():
        return []
    return [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]


def _tag_version(name: str, version: int, decision: Decision) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    prefix = "chorus.rollback" if decision.action == "rollback" else "chorus.promotion"
    tags = {"decision": verdict(decision.as_dict()),
            "reason": decision.reason[:4000], "time": decision.time, "trigger": decision.trigger,
            "champion_before": str(decision.champion), "rule": json.dumps(decision.rule),
            "metrics": json.dumps(decision.challenger_metrics)}
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), f"{prefix}.{key}", value)


def apply(decision: Decision, log_path: Path) -> Decision:
    """Carry out a decision (unless a dry run): champion -> challenger and the old champion ->
    previous-champion on a pass, nothing on a refusal. Either way the audit is written."""
    if decision.promote and not decision.dry_run:
        if decision.champion is not None:
            registry.set_alias(decision.model, PREVIOUS, decision.champion)
        registry.set_alias(decision.model, CHAMPION, decision.challenger)
    _tag_version(decision.model, decision.challenger, decision)
    audit(log_path, decision)
    return decision


def rollback(name: str, log_path: Path, trigger: str = "manual") -> Decision:
    """Restore ``previous-champion`` as champion; the version rolled back from becomes the
    previous champion (so a rollback can itself be undone). Audited like a promotion."""
    current = registry.alias_version(name, CHAMPION)
    previous = registry.alias_version(name, PREVIOUS)
    if previous is None:
        raise InputError(f"models:/{name}@{PREVIOUS}", "no previous champion to roll back to")
    registry.set_alias(name, CHAMPION, previous)
    if current is not None:
        registry.set_alias(name, PREVIOUS, current)
    decision = Decision(model=name, challenger=previous, champion=current, promote=True, action="rollback",
                        reason=f"rollback: champion v{current} -> v{previous}", rule={}, challenger_metrics={},
                        trigger=trigger)
    _tag_version(name, previous, decision)
    audit(log_path, decision)
    return decision
