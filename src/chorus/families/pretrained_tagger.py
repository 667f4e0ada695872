"""musicnn's pretrained taggers (MSD and MagnaTagATune vocabularies) as candidates: the weights
converted from the pinned wheel, under the stored maps' contract; nothing is trained."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from chorus.config import TrainSettings
from chorus.families.base import CandidateSpec, Family, Trained, TrainingJob, register_family
from chorus.models.scorer import TorchScorer
from chorus.pretrained.musicnn import TAGS
from chorus.pretrained.tagger import PretrainedTagger
from chorus.pretrained.weights import MUSICNN_WHEEL, load_pretrained


class PretrainedTaggerFamily(Family):
    name = "pretrained_tagger"
    runtime = "pretrained"
    learns_from_corpus = False

    def train(self, spec: CandidateSpec, job: TrainingJob) -> Trained:
        if job.pretrained_dir is None:
            raise ValueError(f"{spec.name}: a pretrained candidate needs the folder of converted weights")
        started = time.perf_counter()
        contract = job.contract(spec, list(TAGS[spec.arch.split("_")[0]]))
        net = PretrainedTagger(load_pretrained(spec.arch, job.pretrained_dir))
        scorer = TorchScorer(net, contract, [0], np.zeros(1, np.float32), np.ones(1, np.float32)).eval()
        params = {"architecture": spec.arch, "weights": f"{MUSICNN_WHEEL.filename} (sha256 {MUSICNN_WHEEL.sha256})",
                  "licence": MUSICNN_WHEEL.licence, "parameters": sum(p.numel() for p in net.parameters())}
        summary = {"valid_score": None, "seconds": round(time.perf_counter() - started, 1), "device": "cpu",
                   "precision": "fp32"}
        return Trained(scorer, [], params, summary)

    def key_settings(self, spec: CandidateSpec, settings: TrainSettings) -> dict[str, Any]:
        return {"weights_sha256": MUSICNN_WHEEL.sha256}  # the weights, not the corpus or the training settings


FAMILY = register_family(PretrainedTaggerFamily())
