"""The backbone's pretext corpus: larger than the main corpus' train split, labelled by style and
instrument family, and free of every work the main corpus holds out (no leak into test scores)."""

from __future__ import annotations

import pandas as pd
import pytest

from chorus.config import BackboneSettings, DemoSettings
from chorus.datasets.pretext import generate_pretext_corpus, plan_renderings, split_by_work
from chorus.datasets.render import GM_FAMILIES, list_works
from chorus.io import file_sha256
from conftest import TINY_DEMO

SMALL = {**TINY_DEMO, "styles": ["monteverdi"], "tracks_per_style": 4}


@pytest.mark.parametrize("per_work", [1, 2])
def test_plan_leaves_out_held_out_works_and_cycles_through_the_rest(tmp_path, per_work):
    works = [w.label for w in list_works("monteverdi")]
    excluded = set(works[:40])  # 49 works: 9 left for 60 renderings
    backbone = BackboneSettings(corpus_tracks_per_style=60, corpus_renderings_per_work=per_work)
    plan, wanted = plan_renderings(DemoSettings(**SMALL), backbone, excluded, tmp_path)
    jobs = plan["monteverdi"]
    assert wanted == 60 and len(jobs) >= wanted
    labels = [j.work.label for j in jobs]
    assert not set(labels) & excluded
    assert set(labels[: 9 * per_work]) == set(works[40:])  # every allowed work before any repeats
    assert len({j.program for j in jobs[:60]}) > 6  # instruments drawn per rendering, not per mood
    if per_work == 2:  # a work's two renderings in a row (parsed once), in two instruments
        assert labels[0:60:2] == labels[1:60:2]
        assert all(jobs[i].program != jobs[i + 1].program for i in range(0, 60, 2))


def test_a_work_rendered_twice_keeps_its_renderings_in_one_split():
    manifest = pd.DataFrame({"style": ["a"] * 12 + ["b"] * 12, "work": [f"w{i % 6}" for i in range(24)]})
    manifest.loc[12:, "work"] = [f"v{i % 4}" for i in range(12)]
    split = split_by_work(manifest, DemoSettings(**SMALL), 0.3)
    per_work = pd.DataFrame({"work": manifest["work"], "split": split}).groupby("work")["split"].nunique()
    assert (per_work == 1).all()
    for style in ("a", "b"):  # stratified: every style validates on some of its works
        assert set(split[manifest["style"] == style]) == {"train", "valid"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    demo = DemoSettings(**SMALL)
    excluded = {w.label for w in list_works("monteverdi")[:20]}
    backbone = BackboneSettings(corpus_tracks_per_style=8)
    root = tmp_path_factory.mktemp("pretext")
    return demo, backbone, excluded, root, generate_pretext_corpus(demo, backbone, root, excluded)


def test_rendered_corpus_has_its_labels_and_no_held_out_work(corpus):
    _, _, excluded, root, made = corpus
    manifest = pd.read_csv(made.manifest)
    assert len(manifest) == made.tracks == 8
    assert not set(manifest["work"]) & excluded
    assert set(manifest["instrument"]) <= set(GM_FAMILIES) and manifest["instrument"].nunique() > 1
    assert set(manifest["split"]) == {"train", "valid"}
    assert set(pd.read_csv(root / "excluded_works.csv")["work"]) == excluded
    for uri, digest in zip(manifest["uri"], manifest["sha256"], strict=True):
        assert file_sha256(root / uri) == digest


def test_unchanged_corpus_is_reused_and_new_exclusions_re_render(corpus):
    demo, backbone, excluded, root, made = corpus
    stamp = (root / "pretext.json").stat().st_mtime_ns
    again = generate_pretext_corpus(demo, backbone, root, excluded)
    assert again == made and (root / "pretext.json").stat().st_mtime_ns == stamp
    used = set(pd.read_csv(made.manifest)["work"])
    moved = generate_pretext_corpus(demo, backbone, root, excluded | used)
    assert moved.key != made.key and not set(pd.read_csv(moved.manifest)["work"]) & (excluded | used)
