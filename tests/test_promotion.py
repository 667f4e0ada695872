"""The promotion gate: every branch of the decision, and the alias moves, version tags and audit
rows of promote, refuse, dry run and rollback on a real MLflow registry (SQLite)."""

from __future__ import annotations

import pytest

from chorus import promotion, registry
from chorus.config import PromotionRule
from chorus.errors import InputError

RULE = PromotionRule(primary="accuracy", min_improvement=0.02, guards={"balanced_accuracy": 0.03})


def test_promotes_when_primary_improves_and_guards_hold():
    d = promotion.decide("m", 2, {"accuracy": 0.70, "balanced_accuracy": 0.66}, 0.2, RULE, 1,
                         {"accuracy": 0.60, "balanced_accuracy": 0.65})
    assert d.promote and "gain +0.1000" in d.reason


def test_refuses_on_the_primary_metric():
    d = promotion.decide("m", 2, {"accuracy": 0.61, "balanced_accuracy": 0.70}, 0.2, RULE, 1,
                         {"accuracy": 0.60, "balanced_accuracy": 0.65})
    assert not d.promote and d.reason.startswith("primary accuracy")


def test_refuses_on_a_guard_metric():
    d = promotion.decide("m", 2, {"accuracy": 0.70, "balanced_accuracy": 0.60}, 0.2, RULE, 1,
                         {"accuracy": 0.60, "balanced_accuracy": 0.65})
    assert not d.promote and d.reason.startswith("guard balanced_accuracy regressed")


def test_a_split_too_small_to_resolve_the_margin_keeps_the_champion_unless_forced():
    better = {"accuracy": 0.70, "balanced_accuracy": 0.66}
    old = {"accuracy": 0.60, "balanced_accuracy": 0.65}
    kept = promotion.decide("m", 2, better, 0.2, RULE, 1, old, interval=(0.55, 0.85))
    assert not kept.promote and "too small to resolve" in kept.reason and kept.split == "valid"
    assert promotion.decide("m", 2, better, 0.2, RULE, 1, old, interval=(0.55, 0.85), force=True).promote
    assert promotion.decide("m", 2, better, 0.2, RULE, 1, old, interval=(0.69, 0.71)).promote
    # the first champion needs its interval above the trivial baseline
    assert promotion.decide("m", 1, better, 0.2, RULE, interval=(0.4, 1.0)).promote
    assert not promotion.decide("m", 1, better, 0.2, RULE, interval=(0.19, 1.0)).promote


def test_the_test_split_cannot_choose():
    from chorus.config import load_settings
    from chorus.errors import ConfigError

    with pytest.raises(ConfigError, match="reports; it never chooses"):
        load_settings(overrides={"promote": {"split": "test"}})


def test_no_champion_needs_to_beat_the_trivial_baseline():
    assert promotion.decide("m", 1, {"accuracy": 0.30, "balanced_accuracy": 0.3}, 0.2, RULE).promote
    refused = promotion.decide("m", 1, {"accuracy": 0.15, "balanced_accuracy": 0.15}, 0.2, RULE)
    assert not refused.promote and "no champion yet" in refused.reason


def test_unscorable_champion_is_judged_by_the_baseline_and_says_why():
    d = promotion.decide("m", 3, {"accuracy": 0.5, "balanced_accuracy": 0.5}, 0.2, RULE, 1, None,
                         champion_problem="champion v1 cannot be scored on the current data")
    assert d.promote and d.reason.startswith("champion v1 cannot be scored")


@pytest.fixture
def three_versions(tmp_path):
    """A registry with three registered versions of one name (tiny real scorers)."""
    from synthetic import synthetic, train_settings
    from test_models import _train

    registry.configure(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    trained = _train("paper_cnn", train_settings(epochs=1))
    example = synthetic()[0].stacked()[:2]
    for i in range(3):
        registry.log_candidate(trained.scorer, "chorus-style", f"key-{i}", {"candidate": "paper_cnn"}, [], {},
                               {}, input_example=example)
    return tmp_path / "audit" / "promotions.jsonl"


def _decision(challenger, champion, promote, dry_run=False):
    d = promotion.decide("chorus-style", challenger, {"accuracy": 0.9 if promote else 0.1, "balanced_accuracy": 0.9},
                         0.2, RULE, champion, {"accuracy": 0.5, "balanced_accuracy": 0.5} if champion else None)
    d.dry_run, d.trigger = dry_run, "test"
    return d


def test_aliases_tags_and_audit_of_every_action(three_versions):
    log = three_versions
    champion = lambda: registry.alias_version("chorus-style", "champion")  # noqa: E731

    promotion.apply(_decision(1, None, True, dry_run=True), log)  # dry run: nothing moves
    assert champion() is None
    assert registry.version_tags("chorus-style", 1)["chorus.promotion.decision"] == "dry-run: would promote"

    promotion.apply(_decision(1, None, True), log)  # no champion yet
    assert champion() == 1

    promotion.apply(_decision(2, 1, True), log)  # promote
    assert champion() == 2 and registry.alias_version("chorus-style", "previous-champion") == 1
    assert registry.version_tags("chorus-style", 2)["chorus.promotion.decision"] == "promoted"

    promotion.apply(_decision(3, 2, False), log)  # refuse: nothing moves
    assert champion() == 2
    tags = registry.version_tags("chorus-style", 3)
    assert tags["chorus.promotion.decision"] == "refused" and tags["chorus.promotion.champion_before"] == "2"

    promotion.rollback("chorus-style", log, trigger="test")  # back to v1; v2 becomes previous
    assert champion() == 1 and registry.alias_version("chorus-style", "previous-champion") == 2
    assert registry.version_tags("chorus-style", 1)["chorus.rollback.reason"] == "rollback: champion v2 -> v1"

    rows = promotion.read_audit(log)
    assert [(r["challenger"], r["promote"], r["dry_run"], r["action"]) for r in rows] == [
        (1, True, True, "promote"), (1, True, False, "promote"), (2, True, False, "promote"),
        (3, False, False, "promote"), (1, True, False, "rollback")]
    assert all({"time", "trigger", "rule", "reason", "challenger_metrics"} <= set(r) for r in rows)


def test_rollback_without_a_previous_champion_is_a_clear_error(three_versions):
    with pytest.raises(InputError, match="no previous champion"):
        promotion.rollback("chorus-style", three_versions)


def test_scores_compare_class_names_not_positions():
    """A champion trained when the classes were listed differently is scored by name."""
    import numpy as np
    import pandas as pd

    from chorus.evaluation.scoring import score_candidate
    from chorus.features import FeatureSet
    from chorus.models.scorer import Contract

    class Fixed:  # outputs: track t0 -> "b", t1 -> "a"
        contract = Contract("style", "single", ["b", "a"], ("logmel",), "h", "fixed")

        def scores(self, x):
            return np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)[: len(x)]

    features = FeatureSet(np.zeros((2, 4, 4), np.float32), pd.DataFrame({"track_id": ["t0", "t1"], "segment": 0}),
                          "h", {"logmel": np.zeros((2, 4, 4), np.float32)})
    result = score_candidate(Fixed(), features, {"t0": 1, "t1": 0}, ["a", "b"], "single", rounds=100, seed=0)
    assert result["value"]["mean"] == 1.0 and result["accuracy"] == 1.0


def _hash_gate(codes, labels, seed):
    """A hash model's first gate decision, scored as the promote stage scores it."""
    from chorus.evaluation.scoring import gate_metrics, hash_scores

    result = hash_scores(codes, labels, 10, 200, seed)
    rule = PromotionRule(primary="map_at_10", min_improvement=0.02)
    return result, promotion.decide("chorus-hash-32", 1, gate_metrics(result, "hash"), result["baseline"], rule,
                                    interval=tuple(result["value"]["ci"]), baseline_upper=result["baseline_interval"][1])


def test_random_codes_are_refused_as_a_first_champion():
    """The demo's shape (36 held-out tracks, 6 styles): random 32-bit codes score well above the
    share of relevant items (the old baseline, which nearly all of them beat); the gate, a
    one-sided test at 2.5% against random models on the same split, refuses all but a few."""
    import numpy as np

    from chorus.metrics.retrieval import chance_precision

    labels = np.repeat(np.arange(6), 6)
    promoted = beat_chance_precision = 0
    draws = 200
    for seed in range(draws):
        codes = np.random.default_rng(100 + seed).standard_normal((36, 32))
        result, decision = _hash_gate(codes, labels, seed)
        assert 0.2 < result["baseline"] < 0.4  # about 0.29 on this shape, not chance precision's 0.143
        promoted += decision.promote
        beat_chance_precision += result["value"]["mean"] > chance_precision(labels)
    assert promoted <= 0.05 * draws  # measured: 7 of 200
    assert beat_chance_precision >= 0.95 * draws  # what the old rule (value > chance precision) promoted


def test_a_model_equal_to_the_baseline_is_refused_and_a_learned_one_promoted():
    import numpy as np

    labels = np.repeat(np.arange(6), 6)
    rng = np.random.default_rng(7)
    # codes that carry the label: a shared random code per style, a few bits flipped per track
    style_codes = rng.standard_normal((6, 32))
    learned = style_codes[labels] * np.where(rng.random((36, 32)) < 0.2, -1, 1)
    result, decision = _hash_gate(learned, labels, 0)
    assert decision.promote and result["value"]["ci"][0] > result["baseline"]
    # a model whose headline equals the baseline, with an interval around it, is refused
    equal = promotion.decide("m", 1, {"map_at_10": result["baseline"]}, result["baseline"],
                             PromotionRule(primary="map_at_10", min_improvement=0.02),
                             interval=(result["baseline"] - 0.05, result["baseline"] + 0.05))
    assert not equal.promote and "not above the trivial baseline" in equal.reason
