"""Output heads: their loss and the validation score early stopping and model choice use."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from chorus.metrics.classification import macro_average_precision
from chorus.models.nets import balance_loss, pairwise_similarity_loss, quantisation_loss
from chorus.models.scorer import TorchScorer
from chorus.training.data import SegmentSplit, track_mean, track_targets


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
def validation_score(scorer: TorchScorer, split: SegmentSplit, head: HeadSpec) -> float:
    """Track-level: accuracy (single, pretext: mean over heads, hash: of the code classifier) or
    macro average precision (multi)."""
    if len(split) == 0:
        return float("nan")
    out = scorer.outputs(split.x)
    if head.kind == "hash":
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
