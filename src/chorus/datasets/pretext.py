"""The backbone's pretext corpus: more renderings of music21's works, labelled by style and by
instrument family, none of them a work the main corpus holds out.

Why a corpus of its own, and why by work: the demo draws its works from the same music21 pools,
so another rendering of a held-out (valid or test) work - the same composition under another
instrument - would teach the backbone those very tracks and leak into the test scores of the
models built on it (transfer, CRNNH). Works, not files, are excluded. Works of the main train
split may appear (they are training data anyway). A work rendered twice keeps both renderings in
one split, so the backbone never validates on a composition it trained on.

Deterministic from the demo's seed, like the demo; ``pretext.json`` beside the manifest records
the key (settings + excluded works), so an unchanged corpus is reused and a changed one re-rendered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from chorus import MOODS
from chorus.config import BackboneSettings, DemoSettings, stable_hash
from chorus.datasets.demo import (
    MANIFEST_NAME,
    RenderJob,
    generate_demo,
    render_in_rounds,
    reusable_stamp,
    seed_for,
)
from chorus.datasets.render import (
    PRETEXT_PROGRAMS,
    default_soundfont,
    family_of,
    list_works,
)
from chorus.io import file_sha256, write_json_atomic, write_text_atomic

STAMP_NAME = "pretext.json"


@dataclass(frozen=True)
class PretextCorpus:
    root: Path
    manifest: Path
    tracks: int
    works: int
    excluded_works: int
    skipped_works: int
    key: str


def pretext_key(demo: DemoSettings, backbone: BackboneSettings, excluded_works: Iterable[str]) -> str:
    return stable_hash({"demo": demo.config_hash(), "tracks_per_style": backbone.corpus_tracks_per_style,
                        "renderings_per_work": backbone.corpus_renderings_per_work,
                        "valid_share": backbone.corpus_valid_share, "programs": PRETEXT_PROGRAMS,
                        "excluded_works": sorted(set(excluded_works))})


def _rng(demo: DemoSettings, *parts: str) -> np.random.Generator:
    return np.random.default_rng(seed_for(demo, "pretext", *parts))


def plan_renderings(demo: DemoSettings, backbone: BackboneSettings, excluded: set[str],
                    root: Path) -> tuple[dict[str, list[RenderJob]], int]:
    """Per style, candidate render jobs in the order they are tried, and the tracks wanted per
    style. Each style's allowed works come in a seeded order, cycling when there are fewer works
    than renderings, each work rendered ``corpus_renderings_per_work`` times in a row (its score
    is parsed once for them); every rendering draws its own mood profile and instrument, no two
    renderings of a work in the same instrument."""
    wanted = max(4, int(round(backbone.corpus_tracks_per_style * demo.scale)))
    per_work = backbone.corpus_renderings_per_work
    plan: dict[str, list[RenderJob]] = {}
    for style in demo.styles:
        works = [w for w in list_works(style) if w.label not in excluded]
        if not works:
            raise ValueError(f"pretext corpus: every music21 work of style '{style}' is held out by the main corpus")
        rng = _rng(demo, style)
        slots = 3 * wanted  # room for works that fail to render
        order = rng.permutation(len(works))
        moods = rng.integers(0, len(MOODS), size=slots)
        programs = rng.integers(0, len(PRETEXT_PROGRAMS), size=slots)
        if per_work > 1:  # a work's renderings each get another instrument (never the same audio twice)
            programs = np.concatenate([rng.choice(len(PRETEXT_PROGRAMS), per_work, replace=False)
                                       for _ in range(-(-slots // per_work))])[:slots]
        plan[style] = [RenderJob(works[order[(n // per_work) % len(order)]], MOODS[moods[n]],
                                 str(root / "audio" / style / f"{style}-{n:05d}.flac"), demo.clip_seconds,
                                 demo.measures, PRETEXT_PROGRAMS[programs[n]]) for n in range(slots)]
    return plan, wanted


def split_by_work(manifest: pd.DataFrame, demo: DemoSettings, valid_share: float) -> pd.Series:
    """train/valid per work, stratified by style: a work's renderings share their split."""
    split = pd.Series("train", index=manifest.index, dtype=object)
    for style, group in manifest.groupby("style", sort=True):
        works = sorted(group["work"].unique())
        order = _rng(demo, "split", str(style)).permutation(len(works))
        n_valid = min(len(works) - 1, max(1, int(round(valid_share * len(works)))))
        valid = {works[i] for i in order[:n_valid]}
        split[group.index[group["work"].isin(valid)]] = "valid"
    return split


def generate_pretext_corpus(demo: DemoSettings, backbone: BackboneSettings, root: Path, excluded_works: Iterable[str],
                            progress: Callable[[int, int], None] | None = None) -> PretextCorpus:
    """Render the pretext corpus under ``root``: ``manifest.csv`` (uri, style, instrument, program,
    rendering_mood, work, sha256, split), ``excluded_works.csv`` and ``pretext.json``. Idempotent like the demo."""
    root = Path(root)
    excluded = set(excluded_works)
    key = pretext_key(demo, backbone, excluded)
    stamp, manifest_path = root / STAMP_NAME, root / MANIFEST_NAME
    info = reusable_stamp(stamp, key)
    if info is not None:
        return PretextCorpus(root, manifest_path, info["tracks"], info["works"], info["excluded_works"],
                             info["skipped_works"], key)

    plan, wanted = plan_renderings(demo, backbone, excluded, root)
    soundfont = demo.soundfont or default_soundfont()
    rendered, skipped = render_in_rounds(plan, wanted, soundfont, demo, progress)
    rows = []
    for style, jobs in rendered.items():
        for job in sorted(jobs, key=lambda j: j.out):
            assert job.program is not None
            rows.append({"uri": str(Path(job.out).relative_to(root)), "style": style,
                         "instrument": family_of(job.program), "program": job.program, "rendering_mood": job.mood,
                         "work": job.work.label, "sha256": file_sha256(job.out)})
    write_text_atomic(root / "skipped_works.csv",
                      pd.DataFrame(skipped, columns=["work", "style", "reason"]).to_csv(index=False))
    short = {style: wanted - len(jobs) for style, jobs in rendered.items() if len(jobs) < wanted}
    if short:
        raise RuntimeError(f"pretext corpus: too few works rendered, missing per style {short} "
                           f"(reasons in {root / 'skipped_works.csv'})")
    manifest = pd.DataFrame(rows)
    manifest["split"] = split_by_work(manifest, demo, backbone.corpus_valid_share)
    leaked = set(manifest["work"]) & excluded
    assert not leaked, f"held-out works in the pretext corpus: {sorted(leaked)[:5]}"
    write_text_atomic(root / "excluded_works.csv", pd.DataFrame({"work": sorted(excluded)}).to_csv(index=False))
    write_text_atomic(manifest_path, manifest.to_csv(index=False))
    info = {"key": key, "tracks": len(manifest), "works": int(manifest["work"].nunique()),
            "excluded_works": len(excluded), "skipped_works": len({s["work"] for s in skipped}),
            "renderings_per_work_max": int(manifest["work"].value_counts().max()),
            "soundfont": str(soundfont), "soundfont_sha256": file_sha256(soundfont),
            "demo": demo.model_dump(mode="json"), "backbone": backbone.model_dump(mode="json")}
    write_json_atomic(stamp, info)
    return PretextCorpus(root, manifest_path, info["tracks"], info["works"], info["excluded_works"],
                         info["skipped_works"], key)


def prerender(demo: DemoSettings, backbone: BackboneSettings, scratch: Path) -> None:
    """Render the demo corpus and its pretext corpus under ``scratch`` (thrown away after), which
    fills the render cache: ``make setup`` does this, so that a first run takes its clips from the
    cache. The pretext corpus leaves out the works of the demo's valid and test tracks, as the
    pipeline's does when ingest keeps every demo track."""
    corpus = generate_demo(demo, Path(scratch) / "demo")
    manifest = pd.read_csv(corpus.manifest, usecols=["work", "split"])
    generate_pretext_corpus(demo, backbone, Path(scratch) / "pretext",
                            set(manifest.loc[manifest["split"] != "train", "work"].astype(str)))
