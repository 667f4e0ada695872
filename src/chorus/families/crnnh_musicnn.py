"""CRNN hashing on musicnn (the article's CRNNH on a CNN pretrained on real music): the maps
selected by variance from each of musicnn's front-end branches and mid-end layers (MSD weights,
frozen), a recurrent layer over them and a k-bit code, trained as ``crnnh`` is."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from torch import nn

from chorus.config import TrainSettings
from chorus.families.base import CandidateSpec, register_family
from chorus.families.crnnh import crnn_hash
from chorus.families.network import Inputs, NetworkFamily
from chorus.models.scorer import TorchScorer
from chorus.pretrained.tagger import MusicnnTrunk
from chorus.training import SegmentSplit


class MusicnnCRNNHFamily(NetworkFamily):
    name = "crnnh_musicnn"

    def inputs(self, spec: CandidateSpec, train: SegmentSplit, stored: tuple[str, ...], deps: dict[str, Any]) -> Inputs:
        return [0], np.zeros(1, np.float32), np.ones(1, np.float32)  # musicnn normalises its own input

    def build(self, spec: CandidateSpec, settings: TrainSettings, n_out: int, in_channels: int, deps: dict[str, Any],
              train: SegmentSplit | None = None, head_sizes: list[int] | None = None) -> tuple[nn.Module, dict[str, Any]]:
        tagger: TorchScorer = deps["musicnn_msd"]
        trunk = MusicnnTrunk(copy.deepcopy(tagger.net.net))
        return crnn_hash(trunk, tagger.prepare, spec, settings, n_out, train)


FAMILY = register_family(MusicnnCRNNHFamily())
