"""``chorus bench train``: training-step throughput of each network, on the machine's device.

Segments of the stored shape (the configured features: maps x bands x frames) with random
targets, in RAM; each model trains ``epochs`` short epochs through the real training loop
(``chorus.training.fit``: loader, augmentation, autocast, clipping, schedule) and the figures are
medians over the epochs after the first (warm-up). Baseline in the same run: the same loop in
fp32 without channels_last, so ``speedup_vs_fp32`` says what the automatic precision buys here:
the two alternate ``repeats`` times and it is the median of the paired ratios (this machine's
noise moves single runs by tens of percent).
Per model: ``samples_per_s`` (examples per second of training step, loader wait included) and
``loader_share`` (the share of step time spent waiting for the next batch; target <= 0.10).
A model whose ``speedup_vs_fp32`` falls short of ``SPEEDUP_TARGET`` is profiled in both
precisions (a few steps under torch.profiler) and its ``why_below_target`` gives the CPU
milliseconds per step of each part of the step (convolutions, matrix products, recurrent layers,
the rest) and how much faster each part ran: which parts automatic precision does not speed up.
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
FULL = {"segments": 512, "steps": 12, "epochs": 4, "repeats": 3}
QUICK = {"segments": 96, "steps": 3, "epochs": 2, "repeats": 1, "models": ("paper_cnn", "short_chunk")}
PROFILED = {"steps": 4, "epochs": 2}
SPEEDUP_TARGET = 2.0
# parts of a training step, by the name of the operator that spends the time (first match wins)
PARTS = (("recurrent", ("rnn", "gru", "lstm")), ("convolution", ("conv",)),
         ("matrix product", ("addmm", "aten::mm", "bmm", "matmul", "linear")))


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


def _part(operator: str) -> str:
    name = operator.lower()
    return next((part for part, keys in PARTS if any(key in name for key in keys)), "other")


def _trainer(name: str, settings: ChorusSettings, features: Any, tracks: pd.DataFrame,
             precision: str) -> Callable[[dict[str, Any]], Any]:
    """A fresh network ``name`` set to train in ``precision``: called with ``epochs`` and
    ``steps``, it trains through the real loop (``chorus.training.fit``) and returns its result."""
    from chorus.families import BACKBONE, CATALOGUE, build_network, task_targets
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
    return lambda params: fit(scorer, train, empty, head, ts, epochs=params["epochs"], max_steps=params["steps"])


def _measure(name: str, settings: ChorusSettings, features: Any, tracks: pd.DataFrame, params: dict[str, Any],
             precision: str) -> dict[str, Any]:
    """The model's training throughput and loader share in ``precision`` (medians of the warm epochs)."""
    result = _trainer(name, settings, features, tracks, precision)(params)
    warm = result.history[1:] or result.history
    return {"samples_per_s": round(statistics.median(h["samples_per_s"] for h in warm), 1),
            "loader_share": round(statistics.median(h["loader_share"] for h in warm), 4),
            "precision": result.precision, "device": result.device}


def _profile(name: str, settings: ChorusSettings, features: Any, tracks: pd.DataFrame, precision: str) -> dict[str, dict[str, float]]:
    """CPU milliseconds per step in ``precision`` (operators' own time, the loader's thread
    included): by part of the step, and by operator."""
    from torch.profiler import ProfilerActivity, profile

    train = _trainer(name, settings, features, tracks, precision)
    with profile(activities=[ProfilerActivity.CPU]) as recorded:
        train(PROFILED)
    steps = PROFILED["epochs"] * PROFILED["steps"]
    parts: dict[str, float] = {}
    operators: dict[str, float] = {}
    for event in recorded.key_averages():
        ms = event.self_cpu_time_total / 1000 / steps
        part = _part(event.key)
        parts[part] = parts.get(part, 0.0) + ms
        operators[event.key] = ms
    return {"parts": {part: round(ms, 2) for part, ms in sorted(parts.items())},
            "operators": {op: round(ms, 2) for op, ms in operators.items()}}


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
        "torch": torch.__version__, "repeats": params["repeats"], "models": {},
    }
    for name in models:
        autos, bases = [], []
        for repeat in range(params["repeats"]):
            log(f"{name}: {settings.train.precision} precision, then the fp32 baseline ({repeat + 1}/{params['repeats']}) ...")
            autos.append(_measure(name, settings, features, tracks, params, settings.train.precision))
            bases.append(_measure(name, settings, features, tracks, params, "fp32"))
        ratios = [a["samples_per_s"] / b["samples_per_s"] for a, b in zip(autos, bases, strict=True) if b["samples_per_s"]]
        figures["models"][name] = {
            "samples_per_s": statistics.median(a["samples_per_s"] for a in autos),
            "loader_share": statistics.median(a["loader_share"] for a in autos),
            "fp32_samples_per_s": statistics.median(b["samples_per_s"] for b in bases),
            "speedup_vs_fp32": round(statistics.median(ratios), 2) if ratios else None,
            "speedups_vs_fp32": [round(r, 2) for r in ratios],
        }
        speedup = figures["models"][name]["speedup_vs_fp32"]
        if speedup is not None and speedup < SPEEDUP_TARGET and chosen is not None:
            log(f"{name}: below {SPEEDUP_TARGET:g}x, profiling its parts ...")
            figures["models"][name]["why_below_target"] = _why(name, settings, features, tracks)
        log(f"{name}: {figures['models'][name]}")
    shares = [m["loader_share"] for m in figures["models"].values()]
    figures["max_loader_share"] = max(shares)
    figures["loader_share_target_met"] = bool(max(shares) <= 0.10)
    return figures


def _why(name: str, settings: ChorusSettings, features: Any, tracks: pd.DataFrame) -> dict[str, Any]:
    """Per part of a training step: its CPU milliseconds in fp32 and in automatic precision, how
    much faster it ran, and the share of the fp32 step in parts that ran less than 1.5x faster."""
    fp32_profile = _profile(name, settings, features, tracks, "fp32")
    auto_profile = _profile(name, settings, features, tracks, settings.train.precision)
    fp32, auto = fp32_profile["parts"], auto_profile["parts"]
    faster = {part: round(fp32[part] / auto[part], 2) for part in fp32 if auto.get(part)}
    slow = sum(ms for part, ms in fp32.items() if faster.get(part, 1.0) < 1.5)
    heaviest = sorted(fp32_profile["operators"].items(), key=lambda item: -item[1])[:5]
    return {"fp32_ms_per_step": fp32, "auto_ms_per_step": auto, "faster_by_part": faster,
            "fp32_share_not_sped_up": round(slow / sum(fp32.values()), 3),
            # the operators that cost most in fp32, each with its ms per step in both precisions
            "heaviest_fp32_operators": {op: [ms, auto_profile["operators"].get(op, 0.0)] for op, ms in heaviest}}
