"""Model families as plug-ins: the docs' worked example of a new family, run as written, trains,
registers its network for safe loading and keys its results like any built-in family; every
catalogue candidate names a registered family."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chorus.families import CATALOGUE, FAMILIES, family_of, key_settings, task_targets, train_candidate
from chorus.models.persist import load_scorer_folder, save_scorer
from synthetic import feature_settings, synthetic, train_settings

DOCS = Path(__file__).parents[1] / "docs" / "pipeline.md"


@pytest.fixture(scope="module")
def band_profile():
    """The docs' example, executed as a module would be; removed from the catalogue afterwards."""
    text = DOCS.read_text()
    code = re.search(r"<!-- family-example -->\n```python\n(.*?)```", text, re.S)
    assert code, "docs/pipeline.md lost its family example"
    namespace: dict = {"__name__": "band_profile_example"}
    exec(compile(code.group(1), str(DOCS), "exec"), namespace)
    yield CATALOGUE["band_profile"]
    CATALOGUE.pop("band_profile")
    FAMILIES.pop("band_profile")


def test_the_docs_example_family_trains_stores_and_loads(band_profile, tmp_path):
    features, tracks = synthetic()
    settings = train_settings(epochs=6, learning_rate=2e-2)
    targets = task_targets(band_profile.task, tracks, settings)
    trained = train_candidate(band_profile, features, feature_settings(), targets, settings)
    assert trained.summary["valid_score"] > 1 / 3 + 0.2  # three planted styles: chance is 1/3
    assert trained.params["architecture"] == "band_profile"
    loaded = load_scorer_folder(save_scorer(trained.scorer, tmp_path / "scorer"))
    x = features.stacked()[:4]
    assert type(loaded.net).__name__ == "BandProfile"
    assert abs(loaded.scores(x) - trained.scorer.scores(x)).max() < 1e-5
    # keyed like a built-in network: its definition and the training settings it reads
    key = key_settings(band_profile, settings)
    assert key["spec"]["family"] == "torch" and key["settings"]["epochs"] == 6


def test_every_candidate_names_a_registered_family():
    assert all(family_of(spec).name == spec.family for spec in CATALOGUE.values())
    # runtimes are what keys made before families were modules hold
    assert {family_of(spec).runtime for spec in CATALOGUE.values()} == {"torch", "sklearn", "pretrained"}


def test_an_unknown_family_is_refused_by_name():
    from chorus.families import CandidateSpec, register_candidate

    with pytest.raises(ValueError, match="unknown family 'nope'"):
        register_candidate(CandidateSpec("x", "style", "nope"))
