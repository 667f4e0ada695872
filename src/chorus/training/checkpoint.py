"""What a training saves after each epoch and restores on resume: weights, optimiser, schedule,
scaler and the fit state, written atomically and read back as tensors and plain values only."""

from __future__ import annotations

import logging
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chorus.errors import UnsafeModelError
from chorus.io import atomic_path
from chorus.models.scorer import TorchScorer

log = logging.getLogger(__name__)


@dataclass
class FitState:
    """Where a training stands after an epoch: what a checkpoint saves and a resume restores."""

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_score: float = -np.inf
    best_epoch: int = 0
    stale: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    finished: bool = False

    def record(self, row: dict[str, float], scorer: TorchScorer, epochs: int, patience: int) -> None:
        """Keep the best validation epoch's weights; finish after ``patience`` epochs without gain."""
        self.history.append(row)
        score = row["valid_score"] if not np.isnan(row["valid_score"]) else -row["train_loss"]
        if score > self.best_score:
            self.best_score, self.best_epoch, self.stale = float(score), int(row["epoch"]), 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in scorer.state_dict().items()}
        else:
            self.stale += 1
        self.epoch = int(row["epoch"])
        self.finished = self.stale >= patience or self.epoch >= epochs


@dataclass
class Optimisation:
    """The optimiser, its learning-rate schedule and the gradient scaler of one training."""

    params: list[torch.nn.Parameter]
    optimiser: torch.optim.Optimizer
    schedule: Any
    scaler: torch.amp.GradScaler


def save_checkpoint(path: Path, scorer: TorchScorer, opt: Optimisation, state: FitState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"model": scorer.state_dict(), "optimizer": opt.optimiser.state_dict(), "schedule": opt.schedule.state_dict(),
                    "scaler": opt.scaler.state_dict(), "state": asdict(state)}, tmp)


def load_checkpoint(path: Path, scorer: TorchScorer, opt: Optimisation, device: torch.device) -> FitState:
    """Restore weights, optimiser, schedule and scaler from ``path``: tensors and plain values only
    (``weights_only``), so a checkpoint cannot run code."""
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as error:
        raise UnsafeModelError(f"{path}: not a checkpoint of tensors and plain values, refused "
                                    f"({str(error).splitlines()[0]}); delete it to train from the start") from error
    log.info("resuming %s from epoch %d", path, saved["state"]["epoch"])
    scorer.load_state_dict(saved["model"])
    opt.optimiser.load_state_dict(saved["optimizer"])
    opt.schedule.load_state_dict(saved["schedule"])
    opt.scaler.load_state_dict(saved["scaler"])
    return FitState(**saved["state"])
