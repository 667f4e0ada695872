"""The pretext backbone: a short-chunk trunk with one head per pretext task, trained on the
rendered pretext corpus (train + valid; it is judged by the models built on it)."""

from __future__ import annotations

from typing import Any

from torch import nn

from chorus.config import TrainSettings
from chorus.families.base import CandidateSpec, register_family
from chorus.families.network import NetworkFamily
from chorus.models.nets import PretextCNN
from chorus.training import SegmentSplit


class BackboneFamily(NetworkFamily):
    name = "backbone"

    def build(self, spec: CandidateSpec, settings: TrainSettings, n_out: int, in_channels: int, deps: dict[str, Any],
              train: SegmentSplit | None = None, head_sizes: list[int] | None = None) -> tuple[nn.Module, dict[str, Any]]:
        return PretextCNN(list(head_sizes or []), in_channels, tuple(settings.backbone.channels), settings.dropout), {}

    def epochs(self, settings: TrainSettings) -> int:
        return settings.backbone.epochs

    def key_settings(self, spec: CandidateSpec, settings: TrainSettings) -> dict[str, Any]:
        chosen = super().key_settings(spec, settings)
        chosen.pop("epochs")  # trains for backbone.epochs, on its own channels
        chosen.pop("channels")
        chosen["backbone"] = settings.backbone.model_dump(mode="json")
        return chosen


FAMILY = register_family(BackboneFamily())
