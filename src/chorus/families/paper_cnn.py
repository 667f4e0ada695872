"""The article's small CNN (two 5x5 convolutions with average pooling, a fully connected
output), trained from scratch on the log-mel map or all three maps."""

from __future__ import annotations

from typing import Any

from torch import nn

from chorus.config import TrainSettings
from chorus.families.base import CandidateSpec, register_family
from chorus.families.network import NetworkFamily
from chorus.models.nets import PaperCNN
from chorus.training import SegmentSplit


class PaperCNNFamily(NetworkFamily):
    name = "paper_cnn"

    def build(self, spec: CandidateSpec, settings: TrainSettings, n_out: int, in_channels: int, deps: dict[str, Any],
              train: SegmentSplit | None = None, head_sizes: list[int] | None = None) -> tuple[nn.Module, dict[str, Any]]:
        return PaperCNN(n_out, in_channels, dropout=settings.dropout), {}


FAMILY = register_family(PaperCNNFamily())
