"""Fitting a network: one optimiser step, one epoch, and ``fit`` (early stopping on validation,
the best epoch's weights kept, resume from the last checkpoint)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from chorus.config import TrainSettings
from chorus.models.scorer import TorchScorer
from chorus.training.checkpoint import (
    FitState,
    Optimisation,
    load_checkpoint,
    save_checkpoint,
)
from chorus.training.data import (
    EpochPlan,
    Prefetched,
    SegmentBatches,
    SegmentSplit,
    epoch_batches,
)
from chorus.training.device import autocast_dtype, pick_device
from chorus.training.heads import HeadSpec, compute_loss, validation_score


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


def train_step(scorer: TorchScorer, x: torch.Tensor, y: torch.Tensor, head: HeadSpec, settings: TrainSettings,
               opt: Optimisation, dtype: torch.dtype | None, weights: torch.Tensor | None, mixup_seed: list[int]) -> float:
    """One optimiser step on a batch (mixup for single-label heads, autocast, clipped gradients).

    Parameters
    ----------
    x : (batch, channels, n_mels, frames) float32 on the training device
    y : (batch,) int64 class indices, or (batch, labels) float32 targets
    mixup_seed : seeds the mixup weight of this batch (reproducible across resumes)

    Returns
    -------
    float : the batch's loss
    """
    device = x.device
    if dtype is not None and device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    if head.kind == "single" and settings.mixup_alpha > 0:
        lam = float(np.random.default_rng(mixup_seed).beta(settings.mixup_alpha, settings.mixup_alpha))
        perm = torch.randperm(len(y), device=device)
        soft = F.one_hot(y, scorer.net.head.out_features).float()
        x, y = lam * x + (1 - lam) * x[perm], lam * soft + (1 - lam) * soft[perm]
    opt.optimiser.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        output = scorer.forward_selected(x)
    loss = compute_loss(scorer, output, y, head, weights)
    opt.scaler.scale(loss).backward()
    opt.scaler.unscale_(opt.optimiser)
    torch.nn.utils.clip_grad_norm_(opt.params, settings.grad_clip)
    opt.scaler.step(opt.optimiser)
    opt.scaler.update()
    opt.schedule.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return float(loss.item())


def _run_epoch(scorer: TorchScorer, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], head: HeadSpec,
               settings: TrainSettings, opt: Optimisation, dtype: torch.dtype | None, weights: torch.Tensor | None,
               epoch: int, bar: Any) -> dict[str, float]:
    """Every batch of one epoch; returns the mean training loss, throughput and loader share."""
    device = next(scorer.parameters()).device
    total_loss, seen, waited, busy = 0.0, 0, 0.0, 0.0
    while True:
        t0 = time.perf_counter()
        try:
            x, y = next(batches)
        except StopIteration:
            break
        t1 = time.perf_counter()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = train_step(scorer, x, y, head, settings, opt, dtype, weights, [settings.seed, epoch, seen])
        busy += time.perf_counter() - t0
        waited += t1 - t0
        total_loss += loss * len(y)
        seen += len(y)
        bar.update(1)
    bar.close()
    return {"train_loss": total_loss / max(seen, 1), "samples_per_s": seen / busy if busy else 0.0,
            "loader_share": waited / busy if busy else 0.0}


def _prepare(scorer: TorchScorer, settings: TrainSettings, head: HeadSpec, epochs: int,
             steps: int) -> tuple[torch.device, torch.dtype | None, Optimisation, torch.Tensor | None]:
    """Device, autocast precision, optimisation and class weights of a training; the scorer moved
    to the device."""
    torch.set_num_threads(settings.threads or max(1, os.cpu_count() or 1))
    device = pick_device(settings.device)
    dtype = autocast_dtype(device, settings.precision)
    scorer.to(device)
    if dtype is not None and device.type == "cpu":
        scorer.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch accepts it; its stub does not
    params = [p for p in scorer.parameters() if p.requires_grad]
    optimiser = _optimiser(params, settings)
    opt = Optimisation(params, optimiser, _schedule(optimiser, settings, epochs, steps),
                       torch.amp.GradScaler(device.type, enabled=dtype == torch.float16))
    weights = torch.tensor(head.class_weights, dtype=torch.float32, device=device) if head.class_weights is not None else None
    return device, dtype, opt, weights


def _loader(scorer: TorchScorer, train: SegmentSplit, settings: TrainSettings, plan: EpochPlan, device: torch.device,
            floor_db: float) -> torch.utils.data.DataLoader:
    """One loader for all epochs (worker processes, if any, persist); each epoch sets ``plan``.
    Batches hold only the network's channels; masks are filled with each map's mean."""
    data = SegmentBatches(train, settings, scorer.mean.flatten().cpu().numpy(), augment=True,
                          channels=scorer.channels.cpu().tolist(), floor_db=floor_db)
    return torch.utils.data.DataLoader(data, sampler=plan, batch_size=None, num_workers=settings.loader_workers,
                                       persistent_workers=settings.loader_workers > 0, pin_memory=device.type == "cuda")


def _batches(loader: torch.utils.data.DataLoader, settings: TrainSettings) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Worker processes already prepare ahead; in-process loading gets a prefetch thread."""
    return iter(loader) if settings.loader_workers else Prefetched(loader)


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
    after ``patience`` epochs without improvement.

    Parameters
    ----------
    train, valid : segments (x: (N, channels, n_mels, frames) float32) with their targets
    head : the output head's kind, loss and class weights
    checkpoint : saved after every epoch; an existing one is resumed
    on_epoch : called with each epoch's row (loss, validation score, learning rate, throughput)
    max_steps : caps steps per epoch (benchmarks)
    progress : a bar per epoch (default: when stderr is a terminal)
    floor_db : the features' dB floor (augmentation keeps silence there)

    Returns
    -------
    FitResult : the scorer with the best epoch's weights, on the CPU, and the history
    """
    epochs = epochs or settings.epochs
    batches_per_epoch = len(epoch_batches(len(train), settings.batch_size, settings.seed, 1))
    steps = min(batches_per_epoch, max_steps or batches_per_epoch)
    device, dtype, opt, weights = _prepare(scorer, settings, head, epochs, steps)
    plan = EpochPlan()
    loader = _loader(scorer, train, settings, plan, device, floor_db)
    state = load_checkpoint(checkpoint, scorer, opt, device) if checkpoint is not None and checkpoint.exists() else FitState()
    resumed_from = state.epoch
    started = time.perf_counter()
    while not state.finished and state.epoch < epochs:
        epoch = state.epoch + 1
        torch.manual_seed(settings.seed * 7919 + epoch)  # dropout and mixup draws
        scorer.train()
        plan.plan = epoch_batches(len(train), settings.batch_size, settings.seed, epoch)[:steps]
        bar = tqdm(total=len(plan.plan), desc=f"{scorer.contract.candidate} epoch {epoch}/{epochs}", leave=False,
                   disable=not (sys.stderr.isatty() if progress is None else progress), unit="batch")
        measured = _run_epoch(scorer, _batches(loader, settings), head, settings, opt, dtype, weights, epoch, bar)
        row = {"epoch": epoch, "train_loss": measured["train_loss"], "valid_score": float(validation_score(scorer, valid, head)),
               "learning_rate": float(opt.schedule.get_last_lr()[0]), **measured}
        state.record(row, scorer, epochs, settings.patience)
        if on_epoch:
            on_epoch(row)
        if checkpoint is not None:
            save_checkpoint(checkpoint, scorer, opt, state)
    if state.best_state is not None:
        scorer.load_state_dict(state.best_state)
    scorer.eval().cpu().to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]  # as above
    return FitResult(scorer, state.history, state.best_epoch, time.perf_counter() - started, str(device),
                     str(dtype).removeprefix("torch.") if dtype else "fp32", resumed_from)
