"""Training a network on stored feature segments. No MLflow or Prefect here: the caller logs.

Determinism: every epoch reseeds torch and the batch order from (seed, epoch), and augmentation
draws from a seed per batch, so a run resumed from its last checkpoint after a SIGKILL continues
exactly as the uninterrupted run would (checkpoints are written atomically at each epoch end).
"""

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
    level_and_noise,
    noise_bank,
    segment_split,
    track_mean,
    track_targets,
)
from chorus.training.device import autocast_dtype, cpu_has_bf16, pick_device
from chorus.training.fit import FitResult, fit, train_step
from chorus.training.heads import (
    HeadSpec,
    compute_loss,
    track_level_score,
    validation_score,
)

__all__ = [
    "EpochPlan", "FitResult", "FitState", "HeadSpec", "Optimisation", "Prefetched", "SegmentBatches", "SegmentSplit",
    "autocast_dtype", "compute_loss", "cpu_has_bf16", "epoch_batches", "fit", "level_and_noise", "load_checkpoint",
    "noise_bank", "pick_device", "save_checkpoint", "segment_split", "track_level_score", "track_mean",
    "track_targets", "train_step", "validation_score",
]
