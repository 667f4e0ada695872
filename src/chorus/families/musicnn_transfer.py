"""musicnn fine-tuned: the MSD musicnn network (front end and mid end tuned at a tenth of the
learning rate) under a new head, on musicnn's own input."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from torch import nn

from chorus.config import TrainSettings
from chorus.families.base import CandidateSpec, register_family
from chorus.families.network import Inputs, NetworkFamily
from chorus.pretrained.tagger import PretrainedTagger
from chorus.training import SegmentSplit


class MusicnnTransferFamily(NetworkFamily):
    name = "musicnn_transfer"
    learning_rate_scale = 0.1

    def inputs(self, spec: CandidateSpec, train: SegmentSplit, stored: tuple[str, ...], deps: dict[str, Any]) -> Inputs:
        return [0], np.zeros(1, np.float32), np.ones(1, np.float32)  # musicnn normalises its own input

    def build(self, spec: CandidateSpec, settings: TrainSettings, n_out: int, in_channels: int, deps: dict[str, Any],
              train: SegmentSplit | None = None, head_sizes: list[int] | None = None) -> tuple[nn.Module, dict[str, Any]]:
        pretrained = copy.deepcopy(deps["musicnn_msd"].net.net)
        return PretrainedTagger(pretrained, n_out, settings.dropout, tune_midend=True), {}


FAMILY = register_family(MusicnnTransferFamily())
