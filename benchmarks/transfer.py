"""Transfer on a small real-music corpus: musicnn's pretrained embeddings (a linear probe) against
the from-scratch CNNs and MFCC + SVM, held-out whole tracks, same split.

The corpus is ``TRANSFER_PACKAGES`` (game scores and songs from Debian packages, folder per
label, licences kept). Splits are stratified by label; a Frets on Fire song and its guitar stem
share a split (one recording in two mixes would otherwise cross from train to test). The stages
run as ``chorus run --task label`` runs them: ingest, features (both configurations), train,
promote on valid, evaluate on test; then the similar-song index of this run's models (musicnn's
vectors and their 32-bit hash) and its degraded-copy check.

    chorus bench transfer [--quick] [--json]
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf

from chorus import registry
from chorus.audio import AUDIO_SUFFIXES, to_mono
from chorus.config import ChorusSettings, IngestSettings, load_settings
from chorus.features import plan_shards
from chorus.ingest import stratified_hash_split
from chorus.io import atomic_path
from chorus.metrics.classification import bootstrap_interval
from chorus.stages import (
    FeatureSets,
    evaluate_stage,
    extract_shard,
    extraction_settings,
    finish_features,
    index_stage,
    ingest_stage,
    load_tracks,
    promote_stage,
    train_stage,
)
from chorus.state import StateDir
from chorus.training import segment_split, track_mean
from chorus_bench.real_music import DEFAULT_CACHE, PACKAGES, TRANSFER_PACKAGES, build_corpus

CANDIDATES = ("paper_cnn", "short_chunk", "mfcc_svm_pso", "musicnn_probe")
SEARCH_CANDIDATES = ("musicnn_hash_32", "crnnh_musicnn_32")  # ITQ on musicnn's embedding; the CRNN hash on its blocks
FROM_SCRATCH = ("paper_cnn", "short_chunk")
QUICK_TRACKS_PER_LABEL = 6  # of the test tier's corpus (PACKAGES): no download beyond the tests' own
QUICK_SECONDS = 20.0
QUICK_CHECKED_TRACKS = 3  # tracks queried with degraded copies in the search check


def recording(path: Path) -> str:
    """What a file records: a Frets on Fire song and its guitar stem are one recording."""
    return re.sub(r"-(song|guitar|rhythm)$", "", path.stem)


def manifest(corpus: Path, folder: Path, quick: bool) -> Path:
    """A manifest (uri, label, split) of the corpus, beside it (ingest reads only files under a
    manifest's folder); ``quick``: a few tracks per label cut to 20 s, WAV excerpts and their
    manifest under ``folder``."""
    rows = []
    for label_dir in sorted(p for p in corpus.iterdir() if p.is_dir()):
        files = sorted(p for p in label_dir.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
        if quick:
            files = [p for p in files if not p.stem.endswith("-guitar")][:QUICK_TRACKS_PER_LABEL]
        rows += [{"uri": _excerpt(p, folder).name if quick else str(p.relative_to(corpus.parent)), "label": label_dir.name,
                  "recording": recording(p)} for p in files]
    table = pd.DataFrame(rows)
    settings = IngestSettings()
    groups = table.drop_duplicates("recording")
    split_of = dict(zip(groups["recording"], stratified_hash_split(groups["recording"].tolist(), groups["label"].tolist(),
                                                                   settings.split, settings.split_seed), strict=True))
    table["split"] = table["recording"].map(split_of)
    path = folder / "manifest.csv" if quick else corpus.parent / "manifest.csv"
    with atomic_path(path) as tmp:
        table[["uri", "label", "split"]].to_csv(tmp, index=False)
    return path


def _excerpt(path: Path, folder: Path) -> Path:
    """``QUICK_SECONDS`` of the file, past its intro where it allows, decoded alone (a seek, not
    the whole file) and written as WAV at its own rate."""
    info = sf.info(str(path))
    start = int(min(30.0, max(0.0, info.duration - QUICK_SECONDS)) * info.samplerate)
    audio, rate = sf.read(str(path), start=start, frames=int(QUICK_SECONDS * info.samplerate), dtype="float32")
    target = folder / f"{path.parent.name}-{path.stem}.wav"
    sf.write(target, to_mono(audio), rate)
    return target


def _extract(settings: ChorusSettings) -> None:
    """The features stage in every configuration the candidates read (no Dask: one process)."""
    for configuration in extraction_settings(settings):
        started = time.perf_counter()
        shards = plan_shards(load_tracks(configuration), configuration.features, StateDir(configuration.state_dir).features)
        finish_features(configuration, [extract_shard(s, configuration) for s in shards], time.perf_counter() - started)


def run(quick: bool = False, log: Callable[[str], None] = print, cache: Path = DEFAULT_CACHE) -> dict[str, Any]:
    corpus = build_corpus(cache, PACKAGES) if quick else build_corpus(cache / "transfer", TRANSFER_PACKAGES)
    with tempfile.TemporaryDirectory(prefix="chorus-transfer-") as scratch:
        folder = Path(scratch)
        path = manifest(corpus, folder, quick)
        overrides: dict[str, Any] = {"state_dir": str(folder / "state"), "ingest": {"manifest": str(path)},
                                     "train": {"model_prefix": "transfer"}}
        if quick:
            overrides["train"].update({"epochs": 1, "svm": {"budget": 4, "particles": 2}})
            overrides["search"] = {"check": {"tracks": QUICK_CHECKED_TRACKS}}
        settings = load_settings(overrides=overrides).for_task("label")
        settings = settings.model_copy(update={
            "train": settings.train.model_copy(update={"candidates": [*CANDIDATES, *SEARCH_CANDIDATES]}),
            # search over this run's models, whatever the gate decided on this small valid split
            "search": settings.search.model_copy(update={"alias": "challenger"})})
        stages: dict[str, float] = {}
        started = time.perf_counter()
        ingest_stage(settings)
        stages["ingest"] = time.perf_counter() - started
        _extract(settings)
        stages["features"] = time.perf_counter() - started - sum(stages.values())
        trained = train_stage(settings)
        stages["train"] = time.perf_counter() - started - sum(stages.values())
        promote_stage(settings)
        evaluate_stage(settings, trained.counts["candidates"])
        stages["promote_and_evaluate"] = time.perf_counter() - started - sum(stages.values())
        search = index_stage(settings, if_models=True).counts
        stages["index"] = time.perf_counter() - started - sum(stages.values())
        tracks = load_tracks(settings)
        quarantined = pd.read_parquet(StateDir(settings.state_dir).ingest_quarantine)
        for row in quarantined.itertuples():
            log(f"quarantined {row.uri}: {row.reason} ({row.detail})")
        log(f"corpus: {len(tracks)} tracks, {tracks['label'].nunique()} labels; ingest quarantined {len(quarantined)}")
        correct = _correct_per_track(settings, trained.counts["candidates"])
        return {**_figures(tracks, stages, quick, StateDir(settings.state_dir), correct), "search": search}


def _correct_per_track(settings: ChorusSettings, trained: dict[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per candidate, whether each test track (sorted by id) is classified right: the paired
    sample the margins' intervals are drawn from."""
    tracks = load_tracks(settings)
    test = tracks[tracks["split"] == "test"]
    labels = sorted(tracks.loc[tracks["split"] == "train", "label"].unique())
    targets = {t: labels.index(v) for t, v in zip(test["track_id"], test["label"], strict=True) if v in labels}
    sets = FeatureSets(StateDir(settings.state_dir).features, settings.features, list(targets))
    correct = {}
    for name in CANDIDATES:  # the classifiers
        scorer = registry.load_scorer(trained[name]["registered"], trained[name]["version"])
        split = segment_split(sets.for_contract(scorer.contract), scorer.contract.stored_maps, targets)
        track_ids, per_track = track_mean(scorer.scores(split.x), split.track_ids)
        predicted = [scorer.contract.labels[i] for i in per_track.argmax(1)]
        correct[name] = np.array([labels[targets[t]] == p for t, p in zip(track_ids, predicted, strict=True)], float)
    return correct


def margin(correct: dict[str, np.ndarray], better: str, than: str, seed: int = 0) -> dict[str, Any]:
    """Accuracy of ``better`` minus that of ``than`` on the same tracks, with a paired 95% bootstrap interval."""
    difference = correct[better] - correct[than]
    result = bootstrap_interval(lambda i: float(difference[i].mean()), len(difference), 2000, seed)
    return {"mean": round(result["mean"], 4), "ci95": [round(v, 4) for v in result["ci"]]}


def _figures(tracks: pd.DataFrame, stages: dict[str, float], quick: bool, state: StateDir,
             correct: dict[str, np.ndarray]) -> dict[str, Any]:
    metrics = json.loads(state.metrics.read_text())["candidates"]
    held_out = {name: {"accuracy": round(m["value"]["mean"], 4), "ci95": [round(v, 4) for v in m["value"]["ci"]],
                       "majority_baseline": round(m["baseline"], 4), "n_tracks": m["n"]}
                for name, m in metrics.items() if name in CANDIDATES}
    best_scratch = max(FROM_SCRATCH, key=lambda n: held_out[n]["accuracy"])
    return {
        "quick": quick, "tracks": int(len(tracks)), "labels": int(tracks["label"].nunique()),
        "tracks_per_split": tracks["split"].value_counts().to_dict(),
        "held_out_accuracy": held_out,
        "held_out_hash_map10": {name: {"map10": round(m["value"]["mean"], 4), "ci95": [round(v, 4) for v in m["value"]["ci"]],
                                       "random_codes_baseline": round(m["baseline"], 4), "n_tracks": m["n"]}
                                for name, m in metrics.items() if name in SEARCH_CANDIDATES},
        "best_from_scratch": best_scratch,
        "transfer_minus_best_from_scratch": margin(correct, "musicnn_probe", best_scratch),
        "transfer_minus_mfcc_svm": margin(correct, "musicnn_probe", "mfcc_svm_pso"),
        "stage_seconds": {k: round(v, 1) for k, v in stages.items()},
    }
