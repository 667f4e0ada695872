"""CRNN hashing (the article's CRNNH): feature maps selected by variance from each block of the
pretext backbone's trunk, a recurrent layer over them and a k-bit code, trained with the task
loss, a quantisation term and a bit-balance term (``train.hashing``)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from chorus.config import TrainSettings
from chorus.families.base import CandidateSpec, register_family
from chorus.families.network import OnBackboneFamily
from chorus.models.nets import CRNNH, ConvTrunk, select_maps_by_variance
from chorus.models.scorer import TorchScorer
from chorus.training import SegmentSplit


def crnn_hash(trunk: nn.Module, prepare: Callable[[torch.Tensor], torch.Tensor], spec: CandidateSpec,
              settings: TrainSettings, n_out: int, train: SegmentSplit | None) -> tuple[CRNNH, dict[str, Any]]:
    """A CRNN hash on ``trunk`` (a copy, with ``feature_maps``): its maps chosen by variance over
    up to 256 training segments, each ``prepare``d as the trunk reads them."""
    if train is None:
        raise ValueError(f"{spec.name}: CRNN hashing selects its maps on training segments; none given")
    hs = settings.hashing
    sample = torch.from_numpy(np.ascontiguousarray(train.x[: min(len(train), 256)]))
    trunk.eval()
    selected = select_maps_by_variance(cast(ConvTrunk, trunk), list(prepare(sample).split(64)), hs.maps_per_layer)
    facts = {"selected_maps": [s.tolist() for s in selected]}
    return CRNNH(trunk, selected, spec.bits, n_out, hs.pooled, hs.hidden, hs.freeze_backbone), facts


class CRNNHFamily(OnBackboneFamily):
    name = "crnnh"

    def build(self, spec: CandidateSpec, settings: TrainSettings, n_out: int, in_channels: int, deps: dict[str, Any],
              train: SegmentSplit | None = None, head_sizes: list[int] | None = None) -> tuple[nn.Module, dict[str, Any]]:
        backbone: TorchScorer = deps["backbone"]
        return crnn_hash(copy.deepcopy(backbone.net.trunk), backbone.prepare, spec, settings, n_out, train)


FAMILY = register_family(CRNNHFamily())
