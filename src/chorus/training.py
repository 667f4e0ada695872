"""Training a segment classifier on stored features. No MLflow or Prefect here: the caller logs."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from chorus.config import TrainSettings
from chorus.features import FeatureSet
from chorus.models.cnn import SegmentClassifier, StyleCNN

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


@dataclass
class LabelledSegments:
    """Segments of one split with integer targets, and the segment -> track mapping."""

    logmel: np.ndarray
    targets: np.ndarray
    track_ids: np.ndarray


def labelled_segments(features: FeatureSet, tracks: pd.DataFrame, task: str, split: str,
                      classes: list[str]) -> LabelledSegments:
    chosen = tracks[(tracks["split"] == split) & tracks[task].notna() & tracks[task].isin(classes)]
    label_of = dict(zip(chosen["track_id"], chosen[task], strict=True))
    mask = features.segments["track_id"].isin(label_of).to_numpy()
    ids = features.segments["track_id"].to_numpy()[mask]
    index = {c: i for i, c in enumerate(classes)}
    targets = np.array([index[label_of[t]] for t in ids], dtype=np.int64)
    return LabelledSegments(features.logmel[mask], targets, ids)


def track_predictions(probs: np.ndarray, track_ids: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """Average segment probabilities per track; the prediction is the top class."""
    frame = pd.DataFrame(probs, columns=classes)
    frame["track_id"] = track_ids
    mean = frame.groupby("track_id", sort=True)[classes].mean()
    mean["predicted"] = mean[classes].idxmax(axis=1)
    return mean.reset_index()


def track_accuracy(model: SegmentClassifier, data: LabelledSegments) -> float:
    if len(data.targets) == 0:
        return float("nan")
    preds = track_predictions(model.predict_proba(data.logmel), data.track_ids, model.classes)
    truth = pd.Series(data.targets, index=data.track_ids).groupby(level=0).first()
    actual = truth.loc[preds["track_id"]].map(lambda i: model.classes[i]).to_numpy()
    return float((preds["predicted"].to_numpy() == actual).mean())


@dataclass
class TrainResult:
    model: SegmentClassifier
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    device: str = "cpu"


def train_classifier(
    features: FeatureSet,
    tracks: pd.DataFrame,
    settings: TrainSettings,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train on the train split, keep the epoch with the best validation track accuracy."""
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    else:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    device = pick_device(settings.device)
    task = settings.task
    labelled = tracks[tracks[task].notna() & (tracks["split"] == "train")]
    classes = sorted(labelled[task].astype(str).unique().tolist())
    if len(classes) < 2:
        raise ValueError(f"task '{task}' needs at least two classes in the train split, found {classes}")
    train = labelled_segments(features, tracks, task, "train", classes)
    valid = labelled_segments(features, tracks, task, "valid", classes)
    mean, std = float(train.logmel.mean()), float(train.logmel.std() + 1e-6)
    net = StyleCNN(len(classes), tuple(settings.channels), settings.dropout)
    model = SegmentClassifier(net, classes, features.config_hash, mean, std, task).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    steps_per_epoch = max(1, int(np.ceil(len(train.targets) / settings.batch_size)))
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=settings.learning_rate, total_steps=settings.epochs * steps_per_epoch
    )
    # Class weights: the demo is balanced, user data rarely is.
    counts = np.bincount(train.targets, minlength=len(classes)).astype(np.float32)
    weights = torch.tensor(counts.sum() / np.maximum(counts, 1) / len(classes), device=device)
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    frames = train.logmel.shape[2]
    crop = max(8, int(frames * 0.875))  # random time crops as augmentation
    best_state, best_acc, best_epoch = None, -1.0, 0
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        model.train()
        order = rng.permutation(len(train.targets))
        total, seen = 0.0, 0
        for start in range(0, len(order), settings.batch_size):
            idx = order[start : start + settings.batch_size]
            if len(idx) < 2:
                continue  # batch norm needs two samples
            offset = int(rng.integers(0, frames - crop + 1))
            batch = torch.from_numpy(train.logmel[idx][:, :, offset : offset + crop]).to(device)
            target = torch.from_numpy(train.targets[idx]).to(device)
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(model(batch), target)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        row = {
            "epoch": epoch,
            "train_loss": total / max(seen, 1),
            "valid_accuracy": track_accuracy(model, valid),
            "learning_rate": schedule.get_last_lr()[0],
        }
        history.append(row)
        if on_epoch:
            on_epoch(row)
        score = row["valid_accuracy"] if not np.isnan(row["valid_accuracy"]) else -row["train_loss"]
        if score > best_acc:
            best_acc, best_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval().cpu()
    return TrainResult(model, history, best_epoch, time.perf_counter() - started, str(device))
