"""Training a network on stored feature segments. No MLflow or Prefect here: the caller logs.

Determinism: every epoch reseeds torch and the batch order from (seed, epoch), and augmentation
draws from a seed per batch, so a run resumed from its last checkpoint after a SIGKILL continues
exactly as the uninterrupted run would (checkpoints are written atomically at each epoch end).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from chorus.config import TrainSettings
from chorus.evaluation.metrics import macro_average_precision
from chorus.features import FeatureSet
from chorus.io import atomic_path
from chorus.models.nets import balance_loss, pairwise_similarity_loss, quantisation_loss
from chorus.models.scorer import TorchScorer

log = logging.getLogger(__name__)


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` takes CUDA, then Apple MPS, then the CPU; never hard-coded."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@functools.cache
def cpu_has_bf16() -> bool:
    """bf16 autocast pays on CPUs with AMX or AVX512-BF16 units (3.4x here); elsewhere it is
    emulated and slower than fp32, so it is chosen only where the flags say so."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    if precision == "fp32" or device.type == "mps":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else None


@dataclass
class SegmentSplit:
    """The segments of one split: stored maps, targets, and the track of each segment."""

    x: np.ndarray  # (segments, stored maps, bands, frames) float32
    y: np.ndarray  # (segments,) int64 | (segments, labels) float32 | (segments, heads) int64
    track_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def segment_split(features: FeatureSet, stored_maps: tuple[str, ...], targets: dict[str, Any]) -> SegmentSplit:
    """Segments of the tracks in ``targets`` (track -> target), each with its track's target."""
    ids = features.segments["track_id"].to_numpy()
    mask = np.isin(ids, list(targets))
    chosen = ids[mask]
    x = np.stack([features.maps[name][mask] for name in stored_maps], axis=1) if mask.any() else \
        np.zeros((0, len(stored_maps), *features.logmel.shape[1:]), np.float32)
    y = np.asarray([targets[t] for t in chosen])
    return SegmentSplit(x, y, chosen)


def track_mean(scores: np.ndarray, track_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-track predictions: the mean of the track's segment scores (tracks sorted)."""
    frame = pd.DataFrame(scores)
    frame["track_id"] = track_ids
    mean = frame.groupby("track_id", sort=True).mean()
    return mean.index.to_numpy(), mean.to_numpy()


def track_targets(split: SegmentSplit) -> np.ndarray:
    _, first = np.unique(split.track_ids, return_index=True)
    return split.y[first]  # np.unique sorts, like track_mean


@dataclass
class HeadSpec:
    """How a network's output is trained and scored."""

    kind: str  # single | multi | pretext | hash
    head_sizes: list[int] = field(default_factory=list)  # pretext: classes per head
    class_weights: np.ndarray | None = None
    quantisation_weight: float = 0.0
    balance_weight: float = 0.0
    hash_loss: str = "classification"


def compute_loss(scorer: TorchScorer, output: torch.Tensor, target: torch.Tensor, head: HeadSpec,
                 weights: torch.Tensor | None) -> torch.Tensor:
    output = output.float()
    if head.kind == "single":
        if target.dtype.is_floating_point:  # mixup's soft targets
            return -(target * F.log_softmax(output, dim=1)).sum(1).mean()
        return F.cross_entropy(output, target, weight=weights)
    if head.kind == "multi":
        return F.binary_cross_entropy_with_logits(output, target)
    if head.kind == "pretext":
        losses, start = [], 0
        for i, size in enumerate(head.head_sizes):
            losses.append(F.cross_entropy(output[:, start : start + size], target[:, i]))
            start += size
        return torch.stack(losses).sum()
    if head.kind == "hash":
        task = (pairwise_similarity_loss(output, target) if head.hash_loss == "pairwise"
                else F.cross_entropy(scorer.net.classify(output), target))
        return task + head.quantisation_weight * quantisation_loss(output) + head.balance_weight * balance_loss(output)
    raise ValueError(f"unknown head kind {head.kind}")


@torch.no_grad()
def raw_outputs(scorer: TorchScorer, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    scorer.eval()
    device = scorer.mean.device
    out = [scorer(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])).to(device)).float().cpu().numpy()
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


def validation_score(scorer: TorchScorer, split: SegmentSplit, head: HeadSpec) -> float:
    """Track-level: accuracy (single, pretext: mean over heads, hash: of the code classifier) or
    macro average precision (multi)."""
    if len(split) == 0:
        return float("nan")
    out = raw_outputs(scorer, split.x)
    if head.kind == "hash":
        with torch.no_grad():
            out = scorer.net.classify(torch.from_numpy(out).to(scorer.mean.device)).float().cpu().numpy()
    _, per_track = track_mean(out, split.track_ids)
    return track_level_score(per_track, track_targets(split), head.kind, head.head_sizes)


def track_level_score(per_track: np.ndarray, truth: np.ndarray, kind: str, head_sizes: list[int] | None = None) -> float:
    """The validation score of any candidate from its per-track outputs: macro average precision
    (multi), mean accuracy over the heads (pretext), else accuracy."""
    if kind == "multi":
        return macro_average_precision(truth, per_track)
    if kind == "pretext":
        accuracies, start = [], 0
        for i, size in enumerate(head_sizes or []):
            accuracies.append(float((per_track[:, start : start + size].argmax(1) == truth[:, i]).mean()))
            start += size
        return float(np.mean(accuracies))
    return float((per_track.argmax(1) == truth).mean())


_LN10_OVER_10 = np.float32(np.log(10.0) / 10.0)


def noise_bank(shape: tuple[int, ...], size: int, seed: int) -> np.ndarray:
    """``size`` unit-mean white-noise power fields (exponential per bin, like a periodogram's),
    drawn once: sampling fresh ones per batch would cost more than the training step."""
    return np.random.default_rng([seed, 7]).standard_exponential(size=(size, *shape), dtype=np.float32)


def level_and_noise(x: np.ndarray, rng: np.random.Generator, level_db: float, noise_probability: float,
                    snr_db: tuple[float, float], floor_db: float, bank: np.ndarray) -> np.ndarray:
    """What a gain change and additive white noise do to dB maps, in place on a batch (examples,
    channels, bands, frames): each example's level moves by up to +-``level_db``; a
    ``noise_probability`` share of examples get a noise field from ``bank`` at a level ``snr_db``
    below the example's mean power in its first channel (the log-mel; later channels, the HPSS
    parts, take half the noise each). Bins at the floor (digital silence) stay there under the
    level change."""
    n = len(x)
    silent = x <= floor_db
    x += rng.uniform(-level_db, level_db, size=(n, 1, 1, 1)).astype(np.float32)
    noisy = np.flatnonzero(rng.random(n) < noise_probability)
    if len(noisy):
        power = np.exp(x[noisy] * _LN10_OVER_10)
        reference = power[:, :1].mean(axis=(1, 2, 3), keepdims=True)
        snr = rng.uniform(snr_db[0], snr_db[1], size=(len(noisy), 1, 1, 1)).astype(np.float32)
        scale = np.where(np.arange(x.shape[1]) == 0, 1.0, 0.5).astype(np.float32).reshape(1, -1, 1, 1)
        power += bank[rng.integers(0, len(bank), len(noisy))] * (reference * np.exp(-snr * _LN10_OVER_10) * scale)
        x[noisy] = np.log(power) / _LN10_OVER_10
        silent[noisy] = False  # noise fills silence
    np.maximum(x, floor_db, out=x)
    np.copyto(x, np.float32(floor_db), where=silent)
    return x


class SegmentBatches(torch.utils.data.Dataset):
    """Batches cut from in-RAM (or memory-mapped) segments: a random time crop per example, a
    random level change and additive noise (``level_and_noise``), and SpecAugment-style masks
    (filled with the map's mean), drawn from a per-batch seed."""

    def __init__(self, split: SegmentSplit, settings: TrainSettings, fill: np.ndarray, augment: bool,
                 channels: list[int] | None = None, floor_db: float = -100.0) -> None:
        self.split = split
        self.channels = list(range(split.x.shape[1])) if channels is None else list(channels)
        # A contiguous run of channels is a slice (a view); others need fancy indexing.
        first = self.channels[0] if self.channels else 0
        self.cut = (slice(first, first + len(self.channels)) if self.channels == list(range(first, first + len(self.channels)))
                    else self.channels)
        frames = split.x.shape[3]
        self.crop = max(8, int(frames * settings.crop_fraction)) if augment else frames
        self.settings = settings
        self.fill = np.asarray(fill, np.float32).reshape(-1, 1, 1)
        self.augment = augment
        self.floor_db = floor_db
        self.bank = (noise_bank((len(self.channels), split.x.shape[2], self.crop), 64, settings.seed)
                     if augment and settings.noise_probability > 0 else np.ones((1, 1, 1, 1), np.float32))

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, item: tuple[int, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        seed, index = item
        source = self.split.x
        if not self.augment:
            return (torch.from_numpy(np.ascontiguousarray(source[index][:, self.cut], np.float32)),
                    torch.from_numpy(self.split.y[index]))
        rng = np.random.default_rng(seed)
        s, crop, bands = self.settings, self.crop, source.shape[2]
        offsets = rng.integers(0, source.shape[3] - crop + 1, size=len(index))
        # One copy per example, straight from the (possibly memory-mapped) store into the batch.
        x = np.empty((len(index), len(self.channels), bands, crop), np.float32)
        for i, (j, o) in enumerate(zip(index, offsets, strict=True)):
            x[i] = source[j, self.cut, :, o : o + crop]
        if s.level_db > 0 or s.noise_probability > 0:
            level_and_noise(x, rng, s.level_db, s.noise_probability, s.noise_snr_db, self.floor_db, self.bank)
        widths_t = rng.integers(0, min(s.mask_width, crop // 4) + 1, size=(len(index), s.time_masks, 1))
        widths_f = rng.integers(0, min(s.mask_width, bands // 4) + 1, size=(len(index), s.freq_masks, 1))
        starts_t = rng.integers(0, crop - widths_t + 1)
        starts_f = rng.integers(0, bands - widths_f + 1)
        frames_at, bands_at = np.arange(crop), np.arange(bands)
        in_time = ((frames_at >= starts_t) & (frames_at < starts_t + widths_t)).any(axis=1)  # (batch, crop)
        in_band = ((bands_at >= starts_f) & (bands_at < starts_f + widths_f)).any(axis=1)  # (batch, bands)
        masked = in_time[:, None, None, :] | in_band[:, None, :, None]
        np.copyto(x, self.fill[None], where=masked)
        return torch.from_numpy(x), torch.from_numpy(self.split.y[index])


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[tuple[int, np.ndarray]]:
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if batches and len(batches[-1]) < 2:  # batch norm needs two examples
        batches.pop()
    seeds = rng.integers(0, 2**31, size=len(batches))
    return [(int(s), np.sort(b)) for s, b in zip(seeds, batches, strict=True)]


class Prefetched:
    """Iterates ``source`` one item ahead in a background thread, so the next batch is cut while
    the current one trains (numpy copies and torch kernels release the GIL). Order is kept and an
    exception in the source is raised here."""

    _END = object()

    def __init__(self, source: Any, depth: int = 2) -> None:
        import queue
        import threading

        self._queue: Any = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._fill, args=(iter(source),), daemon=True)
        self._thread.start()

    def _fill(self, source: Any) -> None:
        try:
            for item in source:
                self._queue.put(item)
            self._queue.put(self._END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._queue.put(exc)

    def __iter__(self) -> Prefetched:
        return self

    def __next__(self) -> Any:
        item = self._queue.get()
        if item is self._END:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item


class EpochPlan(torch.utils.data.Sampler):
    """The batches of the current epoch (seed, indices), set by the training loop each epoch."""

    def __init__(self) -> None:
        self.plan: list[tuple[int, np.ndarray]] = []

    def __iter__(self) -> Any:
        return iter(list(self.plan))

    def __len__(self) -> int:
        return len(self.plan)


@dataclass
class FitResult:
    scorer: TorchScorer
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    device: str = "cpu"
    precision: str = "fp32"
    resumed_from: int = 0


def _optimiser(params: list[torch.nn.Parameter], settings: TrainSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=settings.learning_rate, momentum=settings.momentum, nesterov=True,
                               weight_decay=settings.weight_decay)
    return torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)


def _schedule(optimiser: torch.optim.Optimizer, settings: TrainSettings, epochs: int, steps: int) -> Any:
    total = max(1, epochs * steps)
    if settings.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=settings.learning_rate, total_steps=total)
    if settings.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=total)
    return torch.optim.lr_scheduler.StepLR(optimiser, step_size=settings.step_every * steps, gamma=0.3)


def fit(
    scorer: TorchScorer,
    train: SegmentSplit,
    valid: SegmentSplit,
    head: HeadSpec,
    settings: TrainSettings,
    *,
    epochs: int | None = None,
    checkpoint: Path | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    max_steps: int | None = None,
    progress: bool | None = None,
    floor_db: float = -100.0,
) -> FitResult:
    """Train ``scorer`` on ``train``, keep the weights of the best validation epoch, stop early
    after ``patience`` epochs without improvement. With ``checkpoint``, every epoch is saved and
    an existing checkpoint is resumed. ``max_steps`` caps steps per epoch (benchmarks).
    ``progress`` shows a bar per epoch (default: when stderr is a terminal). ``floor_db``: the
    features' dB floor (augmentation keeps silence there)."""
    from tqdm import tqdm

    epochs = epochs or settings.epochs
    torch.set_num_threads(settings.threads or max(1, os.cpu_count() or 1))
    device = pick_device(settings.device)
    dtype = autocast_dtype(device, settings.precision)
    scorer.to(device)
    if dtype is not None and device.type == "cpu":
        scorer.to(memory_format=torch.channels_last)
    params = [p for p in scorer.parameters() if p.requires_grad]
    optimiser = _optimiser(params, settings)
    batches_per_epoch = len(epoch_batches(len(train), settings.batch_size, settings.seed, 1))
    steps = min(batches_per_epoch, max_steps or batches_per_epoch)
    schedule = _schedule(optimiser, settings, epochs, steps)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    weights = torch.tensor(head.class_weights, dtype=torch.float32, device=device) if head.class_weights is not None else None
    # Batches hold only the network's channels; masks are filled with each map's mean.
    data = SegmentBatches(train, settings, scorer.mean.flatten().cpu().numpy(), augment=True,
                          channels=scorer.channels.cpu().tolist(), floor_db=floor_db)

    state: dict[str, Any] = {"epoch": 0, "history": [], "best_score": -np.inf, "best_epoch": 0, "stale": 0,
                             "best_state": None, "finished": False}
    if checkpoint is not None and checkpoint.exists():
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        scorer.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        scaler.load_state_dict(saved["scaler"])
        state = saved["state"]
        log.info("resuming %s from epoch %d", checkpoint, state["epoch"])
    resumed_from = state["epoch"]
    # One loader for all epochs (worker processes, if any, persist); each epoch sets its plan.
    schedule_of_batches = EpochPlan()
    loader = torch.utils.data.DataLoader(data, sampler=schedule_of_batches, batch_size=None,
                                         num_workers=settings.loader_workers, persistent_workers=settings.loader_workers > 0,
                                         pin_memory=device.type == "cuda")
    started = time.perf_counter()
    epoch = state["epoch"]
    while not state["finished"] and epoch < epochs:
        epoch += 1
        torch.manual_seed(settings.seed * 7919 + epoch)  # dropout and mixup draws
        scorer.train()
        plan = epoch_batches(len(train), settings.batch_size, settings.seed, epoch)[:steps]
        schedule_of_batches.plan = plan
        total_loss, seen, waited, busy = 0.0, 0, 0.0, 0.0
        # Worker processes already prepare ahead; in-process loading gets a prefetch thread.
        batches = iter(loader) if settings.loader_workers else Prefetched(loader)
        show = sys.stderr.isatty() if progress is None else progress
        bar = tqdm(total=len(plan), desc=f"{scorer.contract.candidate} epoch {epoch}/{epochs}", leave=False,
                   disable=not show, unit="batch")
        while True:
            t0 = time.perf_counter()
            try:
                x, y = next(batches)
            except StopIteration:
                break
            t1 = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if dtype is not None and device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            if head.kind == "single" and settings.mixup_alpha > 0:
                lam = float(np.random.default_rng([settings.seed, epoch, seen]).beta(settings.mixup_alpha, settings.mixup_alpha))
                perm = torch.randperm(len(y), device=device)
                soft = F.one_hot(y, scorer.net.head.out_features).float()
                x, y = lam * x + (1 - lam) * x[perm], lam * soft + (1 - lam) * soft[perm]
            optimiser.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                output = scorer.forward_selected(x)
            loss = compute_loss(scorer, output, y, head, weights)
            scaler.scale(loss).backward()
            scaler.unscale_(optimiser)
            torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
            scaler.step(optimiser)
            scaler.update()
            schedule.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            t2 = time.perf_counter()
            waited += t1 - t0
            busy += t2 - t0
            total_loss += loss.item() * len(y)
            seen += len(y)
            bar.update(1)
        bar.close()
        row = {
            "epoch": epoch,
            "train_loss": total_loss / max(seen, 1),
            "valid_score": validation_score(scorer, valid, head),
            "learning_rate": float(schedule.get_last_lr()[0]),
            "samples_per_s": seen / busy if busy else 0.0,
            "loader_share": waited / busy if busy else 0.0,
        }
        state["history"].append(row)
        if on_epoch:
            on_epoch(row)
        score = row["valid_score"] if not np.isnan(row["valid_score"]) else -row["train_loss"]
        if score > state["best_score"]:
            state.update(best_score=score, best_epoch=epoch, stale=0,
                         best_state={k: v.detach().cpu().clone() for k, v in scorer.state_dict().items()})
        else:
            state["stale"] += 1
        state["epoch"] = epoch
        state["finished"] = state["stale"] >= settings.patience or epoch >= epochs
        if checkpoint is not None:
            save_checkpoint(checkpoint, scorer, optimiser, schedule, scaler, state)
    if state["best_state"] is not None:
        scorer.load_state_dict(state["best_state"])
    scorer.eval().cpu().to(memory_format=torch.contiguous_format)
    return FitResult(scorer, state["history"], state["best_epoch"], time.perf_counter() - started, str(device),
                     str(dtype).removeprefix("torch.") if dtype else "fp32", resumed_from)


def save_checkpoint(path: Path, scorer: TorchScorer, optimiser: torch.optim.Optimizer, schedule: Any,
                    scaler: torch.amp.GradScaler, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"model": scorer.state_dict(), "optimizer": optimiser.state_dict(), "schedule": schedule.state_dict(),
                    "scaler": scaler.state_dict(), "state": state}, tmp)
