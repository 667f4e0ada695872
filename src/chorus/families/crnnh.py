"""CRNN hashing (the article's CRNNH): feature maps selected by variance from each block of the
pretext backbone's trunk, a recurrent layer over them and a k-bit code, trained with the task
loss, a quantisation term and a bit-balance term (``train.hashing``)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from chorus.config import TrainSettings
from chorus.families.base import CandidateSpec, register_family
from chorus.families.network import OnBackboneFamily
from chorus.models.nets import CRNNH, select_maps_by_variance
from chorus.models.scorer import TorchScorer
from chorus.training import SegmentSplit


class CRNNHFamily(OnBackboneFamily):
    name = "crnnh"

    def build(self, spec: CandidateSpec, settings: TrainSettings, n_out: int, in_channels: int, deps: dict[str, Any],
              train: SegmentSplit | None = None, head_sizes: list[int] | None = None) -> tuple[nn.Module, dict[str, Any]]:
        if train is None:
            raise ValueError(f"{spec.name}: CRNN hashing selects its maps on training segments; none given")
        backbone: TorchScorer = deps["backbone"]
        trunk = copy.deepcopy(backbone.net.trunk)
        hs = settings.hashing
        sample = train.x[: min(len(train), 256)]
        prepared = backbone.prepare(torch.from_numpy(np.ascontiguousarray(sample)))
        selected = select_maps_by_variance(trunk, list(prepared.split(64)), hs.maps_per_layer)
        facts = {"selected_maps": [s.tolist() for s in selected]}
        return CRNNH(trunk, selected, spec.bits, n_out, hs.pooled, hs.hidden, hs.freeze_backbone), facts


FAMILY = register_family(CRNNHFamily())
