"""``chorus bench train``: training-step throughput of each network, on the machine's device.

Segments of the stored shape (the configured features: maps x bands x frames) with random
targets, in RAM; each model trains ``epochs`` short epochs through the real training loop
(``chorus.training.fit``: loader, augmentation, autocast, clipping, schedule) and the figures are
medians over the epochs after the first (warm-up). Baseline in the same run: the same loop in
fp32 without channels_last, so ``speedup_vs_fp32`` says what the automatic precision buys here.
Per model: ``samples_per_s`` (examples per second of training step, loader wait included) and
``loader_share`` (the share of step time spent waiting for the next batch; target <= 0.10).
The last line printed is one JSON object.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from chorus.config import ChorusSettings

MODELS = ("paper_cnn", "short_chunk", "short_chunk_res", "crnn", "crnnh_32")
FULL = {"segments": 512, "steps": 12, "epochs": 4}
QUICK = {"segments": 96, "steps": 3, "epochs": 2, "models": ("paper_cnn", "short_chunk")}


def _fake_features(settings: ChorusSettings, n: int, seed: int = 0) -> tuple[Any, pd.DataFrame]:
    from chorus.features import FeatureSet, map_names

    rng = np.random.default_rng(seed)
    fs = settings.features
    maps = {m: rng.normal(-50, 15, (n, fs.n_mels, fs.segment_frames)).astype(np.float32) for m in map_names(fs)}
    segments = pd.DataFrame({"track_id": [f"t{i // 3:05d}" for i in range(n)], "segment": [i % 3 for i in range(n)],
                             "start_s": 0.0})
    tracks = pd.DataFrame({"track_id": sorted(set(segments["track_id"]))})
    tracks["style"] = [f"style{i % 6}" for i in range(len(tracks))]
    tracks["split"] = "train"
    return FeatureSet(maps["logmel"], segments, "bench", maps), tracks


def _measure(name: str, settings: ChorusSettings, features: Any, tracks: pd.DataFrame, params: dict[str, Any],
             precision: str) -> dict[str, float]:
    from chorus.candidates import BACKBONE, CATALOGUE, build_network, task_targets
    from chorus.features import map_names
    from chorus.models.scorer import Contract, TorchScorer
    from chorus.training import HeadSpec, fit, segment_split

    ts = settings.train.model_copy(update={"precision": precision, "patience": 100})
    spec = CATALOGUE[name]
    stored = map_names(settings.features)
    targets = task_targets("style", tracks, ts)
    train = segment_split(features, stored, targets.splits["train"])
    empty = segment_split(features, stored, {})
    channels = [0] if spec.maps == "logmel" else list(range(len(stored)))
    contract = Contract("style", "hash" if spec.task == "hash" else "single", targets.labels, stored, "bench", name)
    deps: dict[str, Any] = {}
    if spec.needs:  # an untrained backbone costs the same per step as a trained one
        net, _ = build_network(BACKBONE, ts, 14, len(stored), {}, head_sizes=[6, 8])
        deps["backbone"] = TorchScorer(net, contract, list(range(len(stored))), np.zeros(len(stored)), np.ones(len(stored)))
        channels = list(range(len(stored)))
    net, _ = build_network(spec, ts, len(targets.labels), len(channels), deps, train)
    scorer = TorchScorer(net, contract, channels, np.full(len(channels), -50.0), np.full(len(channels), 15.0))
    head = HeadSpec(contract.kind, quantisation_weight=0.1, balance_weight=0.1)
    result = fit(scorer, train, empty, head, ts, epochs=params["epochs"], max_steps=params["steps"])
    warm = result.history[1:] or result.history
    return {"samples_per_s": round(statistics.median(h["samples_per_s"] for h in warm), 1),
            "loader_share": round(statistics.median(h["loader_share"] for h in warm), 4),
            "precision": result.precision, "device": result.device}


def run(settings: ChorusSettings, quick: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    from chorus.training import autocast_dtype, pick_device

    params = dict(QUICK if quick else FULL)
    models = params.pop("models", MODELS)
    features, tracks = _fake_features(settings, params["segments"])
    device = pick_device(settings.train.device)
    chosen = autocast_dtype(device, settings.train.precision)
    fs = settings.features
    figures: dict[str, Any] = {
        "device": str(device), "threads": settings.train.threads or os.cpu_count(), "batch_size": settings.train.batch_size,
        "input_shape": [len(features.maps), fs.n_mels, fs.segment_frames], "steps_per_epoch": params["steps"],
        "epochs": params["epochs"], "precision": str(chosen).removeprefix("torch.") if chosen else "fp32",
        "torch": torch.__version__, "models": {},
    }
    for name in models:
        log(f"{name}: {settings.train.precision} precision ...")
        auto = _measure(name, settings, features, tracks, params, settings.train.precision)
        log(f"{name}: fp32 baseline ...")
        base = _measure(name, settings, features, tracks, params, "fp32")
        figures["models"][name] = {
            "samples_per_s": auto["samples_per_s"], "loader_share": auto["loader_share"],
            "fp32_samples_per_s": base["samples_per_s"],
            "speedup_vs_fp32": round(auto["samples_per_s"] / base["samples_per_s"], 2) if base["samples_per_s"] else None,
        }
        log(f"{name}: {figures['models'][name]}")
    shares = [m["loader_share"] for m in figures["models"].values()]
    figures["max_loader_share"] = max(shares)
    figures["loader_share_target_met"] = bool(max(shares) <= 0.10)
    return figures
