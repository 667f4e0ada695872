"""Transfer from the pretext backbone: its trunk (frozen or fine-tuned) under a new head, reading
the backbone's maps with its normalisation."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from chorus.config import TrainSettings
from chorus.families.base import CandidateSpec, register_family
from chorus.families.network import OnBackboneFamily
from chorus.models.nets import TransferCNN
from chorus.models.scorer import TorchScorer
from chorus.training import SegmentSplit


class TransferFamily(OnBackboneFamily):
    name = "transfer"

    def build(self, spec: CandidateSpec, settings: TrainSettings, n_out: int, in_channels: int, deps: dict[str, Any],
              train: SegmentSplit | None = None, head_sizes: list[int] | None = None) -> tuple[nn.Module, dict[str, Any]]:
        backbone: TorchScorer = deps["backbone"]
        return TransferCNN(copy.deepcopy(backbone.net.trunk), n_out, freeze=spec.freeze, dropout=settings.dropout), {}


FAMILY = register_family(TransferFamily())
