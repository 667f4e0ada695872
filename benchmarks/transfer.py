"""Transfer on a small real-music corpus: musicnn's pretrained embeddings (a linear probe) against
the from-scratch CNNs and MFCC + SVM, held-out whole tracks, same split.

The corpus is ``TRANSFER_PACKAGES`` (game scores and songs from Debian packages, folder per
label, licences kept). Splits are stratified by label; a Frets on Fire song and its guitar stem
share a split (one recording in two mixes would otherwise cross from train to test). The stages
run as ``chorus run --task label`` runs them: ingest, features (both configurations), train,
promote on valid, evaluate on test.

    chorus bench transfer [--quick] [--json]
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import soundfile as sf

from chorus.audio import load_mono
from chorus.config import ChorusSettings, IngestSettings, load_settings
from chorus.datasets.candidates import AUDIO_SUFFIXES
from chorus.features import plan_shards
from chorus.ingest import stratified_hash_split
from chorus.stages import evaluate_stage, extract_shard, extraction_settings, finish_features, ingest_stage, load_tracks, promote_stage, train_stage
from chorus.state import StateDir
from chorus_bench.real_music import DEFAULT_CACHE, TRANSFER_PACKAGES, build_corpus

CANDIDATES = ("paper_cnn", "short_chunk", "mfcc_svm_pso", "musicnn_probe")
FROM_SCRATCH = ("paper_cnn", "short_chunk")
QUICK_LABELS = ("drascula-music", "hyperrogue-music", "fretsonfire")
QUICK_TRACKS_PER_LABEL = 6
QUICK_SECONDS = 20.0


def recording(path: Path) -> str:
    """What a file records: a Frets on Fire song and its guitar stem are one recording."""
    return re.sub(r"-(song|guitar|rhythm)$", "", path.stem)


def manifest(corpus: Path, folder: Path, quick: bool) -> Path:
    """A manifest (uri, label, split) of the corpus; ``quick``: a few tracks per label, cut to
    their first seconds (WAV excerpts under ``folder``)."""
    rows = []
    for label_dir in sorted(p for p in corpus.iterdir() if p.is_dir()):
        if quick and label_dir.name not in QUICK_LABELS:
            continue
        files = sorted(p for p in label_dir.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
        if quick:
            files = [p for p in files if not p.stem.endswith("-guitar")][:QUICK_TRACKS_PER_LABEL]
        rows += [{"uri": str(_excerpt(p, folder) if quick else p), "label": label_dir.name, "recording": recording(p)}
                 for p in files]
    table = pd.DataFrame(rows)
    settings = IngestSettings()
    groups = table.drop_duplicates("recording")
    split_of = dict(zip(groups["recording"], stratified_hash_split(groups["recording"].tolist(), groups["label"].tolist(),
                                                                   settings.split, settings.split_seed), strict=True))
    table["split"] = table["recording"].map(split_of)
    path = folder / "manifest.csv"
    table[["uri", "label", "split"]].to_csv(path, index=False)
    return path


def _excerpt(path: Path, folder: Path) -> Path:
    rate = 22050
    audio = load_mono(str(path), rate)
    target = folder / f"{path.parent.name}-{path.stem}.wav"
    sf.write(target, audio[int(30 * rate): int((30 + QUICK_SECONDS) * rate)], rate)
    return target


def _extract(settings: ChorusSettings) -> None:
    """The features stage in every configuration the candidates read (no Dask: one process)."""
    for configuration in extraction_settings(settings):
        started = time.perf_counter()
        shards = plan_shards(load_tracks(configuration), configuration.features, StateDir(configuration.state_dir).features)
        finish_features(configuration, [extract_shard(s, configuration) for s in shards], time.perf_counter() - started)


def run(quick: bool = False, log: Callable[[str], None] = print, cache: Path = DEFAULT_CACHE) -> dict[str, Any]:
    corpus = build_corpus(cache / "transfer", TRANSFER_PACKAGES)
    with tempfile.TemporaryDirectory(prefix="chorus-transfer-") as scratch:
        folder = Path(scratch)
        path = manifest(corpus, folder, quick)
        overrides: dict[str, Any] = {"state_dir": str(folder / "state"), "ingest": {"manifest": str(path)},
                                     "train": {"model_prefix": "transfer"}}
        if quick:
            overrides["train"].update({"epochs": 2, "svm": {"swarm_size": 4, "iterations": 2}})
        settings = load_settings(overrides=overrides).for_task("label")
        settings = settings.model_copy(update={"train": settings.train.model_copy(update={"candidates": list(CANDIDATES)})})
        stages: dict[str, float] = {}
        started = time.perf_counter()
        ingested = ingest_stage(settings)
        stages["ingest"] = time.perf_counter() - started
        _extract(settings)
        stages["features"] = time.perf_counter() - started - sum(stages.values())
        trained = train_stage(settings)
        stages["train"] = time.perf_counter() - started - sum(stages.values())
        promote_stage(settings)
        evaluated = evaluate_stage(settings, trained.counts["candidates"])
        stages["promote_and_evaluate"] = time.perf_counter() - started - sum(stages.values())
        tracks = load_tracks(settings)
    log(f"corpus: {len(tracks)} tracks, {tracks['label'].nunique()} labels; ingest quarantined "
        f"{ingested.counts.get('quarantined', 0)}")
    return _figures(evaluated.counts, tracks, stages, quick, StateDir(settings.state_dir))


def _figures(counts: dict[str, Any], tracks: pd.DataFrame, stages: dict[str, float], quick: bool,
             state: StateDir) -> dict[str, Any]:
    import json

    metrics = json.loads(state.metrics.read_text())["candidates"]
    held_out = {name: {"accuracy": round(m["value"]["mean"], 4), "ci95": [round(v, 4) for v in m["value"]["ci"]],
                       "majority_baseline": round(m["baseline"], 4), "n_tracks": m["n"]}
                for name, m in metrics.items()}
    transfer = held_out.get("musicnn_probe", {}).get("accuracy", float("nan"))
    best_scratch = max((held_out[n]["accuracy"] for n in FROM_SCRATCH if n in held_out), default=float("nan"))
    mfcc = held_out.get("mfcc_svm_pso", {}).get("accuracy", float("nan"))
    return {
        "quick": quick, "tracks": int(len(tracks)), "labels": int(tracks["label"].nunique()),
        "tracks_per_split": tracks["split"].value_counts().to_dict(),
        "held_out_accuracy": held_out,
        "transfer_minus_best_from_scratch": round(transfer - best_scratch, 4),
        "transfer_minus_mfcc_svm": round(transfer - mfcc, 4),
        "stage_seconds": {k: round(v, 1) for k, v in stages.items()},
    }
