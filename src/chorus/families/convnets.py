"""Modern networks trained from scratch: the short-chunk CNN (optionally residual, as in
Won et al. 2020) and a CRNN (its first three blocks, a recurrent layer over time)."""

from __future__ import annotations

from typing import Any

from torch import nn

from chorus.config import TrainSettings
from chorus.families.base import CandidateSpec, register_family
from chorus.families.network import NetworkFamily
from chorus.models.nets import CRNN, ShortChunkCNN
from chorus.training import SegmentSplit


class ShortChunkFamily(NetworkFamily):
    name = "short_chunk"

    def build(self, spec: CandidateSpec, settings: TrainSettings, n_out: int, in_channels: int, deps: dict[str, Any],
              train: SegmentSplit | None = None, head_sizes: list[int] | None = None) -> tuple[nn.Module, dict[str, Any]]:
        return ShortChunkCNN(n_out, in_channels, tuple(settings.channels), spec.residual, settings.dropout), {}


class CRNNFamily(NetworkFamily):
    name = "crnn"

    def build(self, spec: CandidateSpec, settings: TrainSettings, n_out: int, in_channels: int, deps: dict[str, Any],
              train: SegmentSplit | None = None, head_sizes: list[int] | None = None) -> tuple[nn.Module, dict[str, Any]]:
        return CRNN(n_out, in_channels, tuple(settings.channels)[:3], dropout=settings.dropout), {}


SHORT_CHUNK = register_family(ShortChunkFamily())
CRNN_FAMILY = register_family(CRNNFamily())
