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
A model whose ``speedup_vs_fp32`` falls short of ``SPEEDUP_TARGET``, or whose fp32 step is
below ``FP32_PEAK_SHARE_TARGET`` of the fp32 peak (``below_fp32_peak_share``), is profiled in both
precisions (a few steps under torch.profiler) and its ``why_below_target`` gives the CPU
milliseconds per step of each part of the step (convolutions, matrix products, recurrent layers,
the rest) and how much faster each part ran: which parts automatic precision does not speed up.
Against the machine: ``gflops`` (the step's floating-point work, counted once per model with
``torch.utils.flop_counter`` over a forward and backward pass, times the steps per second) and
``share_of_peak`` (of ``peak_gflops``: a large matrix product timed in the same run, fp32 and,
where the CPU has bf16 units, bf16), and per step the system CPU share and minor page faults
(``resource.getrusage`` around the timed epochs). On a CPU, ``inference`` times scoring in
batches of 256 against the CPU's inference batch (``chorus.models.scorer.INFERENCE_BATCH``),
with the system CPU and page faults of each.
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
FP32_PEAK_SHARE_TARGET = 0.4  # of the measured fp32 peak, per network's fp32 training step
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
    ``steps``, it trains through the real loop (``chorus.training.fit``) and returns its result
    (called with None: the scorer and the training split, for counting its work)."""
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
    return lambda params: (scorer, train, channels) if params is None else \
        fit(scorer, train, empty, head, ts, epochs=params["epochs"], max_steps=params["steps"])


def _flops_per_sample(name: str, settings: ChorusSettings, features: Any, tracks: pd.DataFrame) -> float:
    """Floating-point operations of one training sample: a forward and backward pass of a batch,
    counted by torch's flop counter (convolutions, matrix products, recurrent layers), per sample."""
    from torch.utils.flop_counter import FlopCounterMode

    scorer, train, channels = _trainer(name, settings, features, tracks, "fp32")(None)
    batch = min(settings.train.batch_size, len(train.x))
    x = torch.from_numpy(np.ascontiguousarray(train.x[:batch][:, channels]))
    scorer.train()
    with FlopCounterMode(display=False) as counter:
        output = scorer.forward_selected(x)
        (output[0] if isinstance(output, tuple) else output).float().sum().backward()
    return counter.get_total_flops() / batch


def peak_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """The machine's measured matrix-product rate in ``dtype`` (median of ``repeats`` products of
    two size x size matrices, after one warm-up), GFLOP/s."""
    import time

    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - started)
    return 2 * size**3 / statistics.median(times) / 1e9


def _measure(name: str, settings: ChorusSettings, features: Any, tracks: pd.DataFrame, params: dict[str, Any],
             precision: str) -> dict[str, Any]:
    """The model's training throughput and loader share in ``precision`` (medians of the warm epochs),
    and the system CPU share and minor page faults per step of the whole training."""
    import resource

    train = _trainer(name, settings, features, tracks, precision)
    before = resource.getrusage(resource.RUSAGE_SELF)
    result = train(params)
    after = resource.getrusage(resource.RUSAGE_SELF)
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    warm = result.history[1:] or result.history
    return {"samples_per_s": round(statistics.median(h["samples_per_s"] for h in warm), 1),
            "loader_share": round(statistics.median(h["loader_share"] for h in warm), 4),
            "system_cpu_share": round(system / max(user + system, 1e-9), 3),
            "minor_faults_per_step": round((after.ru_minflt - before.ru_minflt) / (params["epochs"] * params["steps"])),
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


def _inference(settings: ChorusSettings, features: Any, segments: int, repeats: int) -> dict[str, Any]:
    """Scoring ``segments`` stored segments with the short-chunk CNN in batches of 256 and of the
    CPU's inference batch, each after the freed heap is handed back (as between stages): wall
    seconds, system CPU seconds and minor page faults, medians over ``repeats``."""
    import resource
    import time

    from chorus.compute import release_freed_memory
    from chorus.models.nets import ShortChunkCNN
    from chorus.models.scorer import INFERENCE_BATCH, INFERENCE_BATCH_ELSEWHERE, Contract, TorchScorer

    maps = list(features.maps)
    contract = Contract("bench", "single", ["a", "b"], tuple(maps), "bench", "short_chunk")
    scorer = TorchScorer(ShortChunkCNN(2, len(maps), tuple(settings.train.channels)), contract, list(range(len(maps))),
                         np.zeros(len(maps), np.float32), np.ones(len(maps), np.float32))
    fs = settings.features
    x = np.random.default_rng(0).normal(-40, 10, (segments, len(maps), fs.n_mels, fs.segment_frames)).astype(np.float32)
    runs: dict[int, list[tuple[float, float, int]]] = {}
    for _ in range(repeats):
        for batch in (INFERENCE_BATCH_ELSEWHERE, INFERENCE_BATCH["cpu"]):
            release_freed_memory()
            before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            scorer.scores(x, batch_size=batch)
            after = resource.getrusage(resource.RUSAGE_SELF)
            runs.setdefault(batch, []).append((time.perf_counter() - started, after.ru_stime - before.ru_stime,
                                               after.ru_minflt - before.ru_minflt))
    return {f"batch_{batch}": {"seconds": round(statistics.median(r[0] for r in rows), 3),
                               "system_seconds": round(statistics.median(r[1] for r in rows), 3),
                               "minor_faults": int(statistics.median(r[2] for r in rows))}
            for batch, rows in runs.items()} | {"segments": segments}


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
        "cpu": _cpu_model(), "peak_gflops": {"fp32": round(peak_gflops(torch.float32), 1)},
    }
    if chosen is not None:  # the automatic precision's own peak (bf16 units where the CPU has them)
        figures["peak_gflops"][str(chosen).removeprefix("torch.")] = round(peak_gflops(chosen), 1)
    for name in models:
        autos, bases = [], []
        for repeat in range(params["repeats"]):
            log(f"{name}: {settings.train.precision} precision, then the fp32 baseline ({repeat + 1}/{params['repeats']}) ...")
            autos.append(_measure(name, settings, features, tracks, params, settings.train.precision))
            bases.append(_measure(name, settings, features, tracks, params, "fp32"))
        ratios = [a["samples_per_s"] / b["samples_per_s"] for a, b in zip(autos, bases, strict=True) if b["samples_per_s"]]
        gflop = _flops_per_sample(name, settings, features, tracks) / 1e9
        auto_rate, fp32_rate = (statistics.median(m["samples_per_s"] for m in runs) for runs in (autos, bases))
        auto_peak = figures["peak_gflops"].get(figures["precision"], figures["peak_gflops"]["fp32"])
        figures["models"][name] = {
            "samples_per_s": auto_rate,
            "loader_share": statistics.median(a["loader_share"] for a in autos),
            "gflop_per_sample": round(gflop, 3),
            "gflops": round(gflop * auto_rate, 1), "share_of_peak": round(gflop * auto_rate / auto_peak, 3),
            "fp32_gflops": round(gflop * fp32_rate, 1),
            "fp32_share_of_peak": round(gflop * fp32_rate / figures["peak_gflops"]["fp32"], 3),
            "system_cpu_share": statistics.median(m["system_cpu_share"] for m in autos + bases),
            "minor_faults_per_step": statistics.median(m["minor_faults_per_step"] for m in autos + bases),
            "fp32_samples_per_s": fp32_rate,
            "speedup_vs_fp32": round(statistics.median(ratios), 2) if ratios else None,
            "speedups_vs_fp32": [round(r, 2) for r in ratios],
        }
        speedup = figures["models"][name]["speedup_vs_fp32"]
        slow_autocast = speedup is not None and speedup < SPEEDUP_TARGET and chosen is not None
        if slow_autocast or figures["models"][name]["fp32_share_of_peak"] < FP32_PEAK_SHARE_TARGET:
            log(f"{name}: below {SPEEDUP_TARGET:g}x or {FP32_PEAK_SHARE_TARGET:.0%} of the fp32 peak, profiling its parts ...")
            figures["models"][name]["why_below_target"] = _why(name, settings, features, tracks)
        log(f"{name}: {figures['models'][name]}")
    if device.type == "cpu":
        log("inference: scoring in batches of 256 and of the CPU's inference batch ...")
        figures["inference"] = _inference(settings, features, 128 if quick else 512, params["repeats"])
    figures["targets"] = {"speedup_vs_fp32": SPEEDUP_TARGET, "fp32_share_of_peak": FP32_PEAK_SHARE_TARGET}
    figures["below_fp32_peak_share"] = sorted(n for n, m in figures["models"].items()
                                              if m["fp32_share_of_peak"] < FP32_PEAK_SHARE_TARGET)
    shares = [m["loader_share"] for m in figures["models"].values()]
    figures["max_loader_share"] = max(shares)
    figures["loader_share_target_met"] = bool(max(shares) <= 0.10)
    return figures


def _cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), and whether it has bf16 units: figures name their machine."""
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return "unknown"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "unknown")
    units = [flag for flag in ("avx512_bf16", "amx_bf16") if f" {flag}" in info]
    return f"{model} ({', '.join(units) or 'no bf16 units'})"


def _why(name: str, settings: ChorusSettings, features: Any, tracks: pd.DataFrame) -> dict[str, Any]:
    """Per part of a training step: its CPU milliseconds in fp32 and in automatic precision, how
    much faster it ran, the share of the fp32 step in parts that ran less than 1.5x faster, and
    the share outside convolutions, matrix products and recurrent layers (pooling, batch norm,
    element-wise arithmetic, the optimiser: bound by memory traffic, not by the FLOP peak)."""
    fp32_profile = _profile(name, settings, features, tracks, "fp32")
    auto_profile = _profile(name, settings, features, tracks, settings.train.precision)
    fp32, auto = fp32_profile["parts"], auto_profile["parts"]
    faster = {part: round(fp32[part] / auto[part], 2) for part in fp32 if auto.get(part)}
    slow = sum(ms for part, ms in fp32.items() if faster.get(part, 1.0) < 1.5)
    heaviest = sorted(fp32_profile["operators"].items(), key=lambda item: -item[1])[:5]
    return {"fp32_ms_per_step": fp32, "auto_ms_per_step": auto, "faster_by_part": faster,
            "fp32_share_not_sped_up": round(slow / sum(fp32.values()), 3),
            "fp32_share_without_arithmetic": round(fp32.get("other", 0.0) / sum(fp32.values()), 3),
            # the operators that cost most in fp32, each with its ms per step in both precisions
            "heaviest_fp32_operators": {op: [ms, auto_profile["operators"].get(op, 0.0)] for op, ms in heaviest}}
