"""What every network family shares: normalisation from the train split, the head and its
loss, the training loop (``chorus.training.fit``), and the parameters and summary it logs.
A network family says how to build its network (``build``) and, where it differs, which stored
maps it reads and how they are normalised (``inputs``)."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch

from chorus.config import TrainSettings
from chorus.families.base import CandidateSpec, Family, Trained, TrainingJob
from chorus.models.scorer import TorchScorer
from chorus.training import HeadSpec, SegmentSplit, fit

Inputs = tuple[list[int], np.ndarray, np.ndarray]  # channels read, their means and standard deviations


def channel_stats(split: SegmentSplit, channels: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation over a split's segments, shapes (channels,)."""
    x = split.x[:, channels]
    return x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3)) + 1e-6


def class_weights(y: np.ndarray, n: int) -> np.ndarray:
    """Inverse-frequency weights of ``n`` classes, mean 1 over the training examples."""
    counts = np.bincount(y, minlength=n).astype(np.float32)
    return counts.sum() / np.maximum(counts, 1) / n


class NetworkFamily(Family):
    """A family of networks trained by gradient descent on the stored maps."""

    runtime: ClassVar = "torch"
    learning_rate_scale: ClassVar[float] = 1.0  # a pretrained network's layers move less than a fresh one's

    @abstractmethod
    def build(self, spec: CandidateSpec, settings: TrainSettings, n_out: int, in_channels: int, deps: dict[str, Any],
              train: SegmentSplit | None = None, head_sizes: list[int] | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
        """The freshly initialised network (seeded by the caller) and facts to log about it."""

    def inputs(self, spec: CandidateSpec, train: SegmentSplit, stored: tuple[str, ...], deps: dict[str, Any]) -> Inputs:
        """The stored maps the network reads (the log-mel alone or all) and their train statistics."""
        channels = [0] if spec.maps == "logmel" else list(range(len(stored)))
        mean, std = channel_stats(train, channels)
        return channels, mean, std

    def epochs(self, settings: TrainSettings) -> int:
        return settings.epochs

    def key_settings(self, spec: CandidateSpec, settings: TrainSettings) -> dict[str, Any]:
        chosen = settings.model_dump(mode="json", exclude={*settings._runtime_fields, "svm", "hashing", "backbone",
                                                            "model_prefix", "mood_task"})
        if spec.task == "hash":
            chosen["hashing"] = settings.hashing.model_dump(mode="json")
        return chosen

    def network(self, spec: CandidateSpec, settings: TrainSettings, n_out: int, in_channels: int, deps: dict[str, Any],
                train: SegmentSplit | None = None, head_sizes: list[int] | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
        """``build`` from ``settings.seed``: the same settings give the same initial weights."""
        torch.manual_seed(settings.seed)
        return self.build(spec, settings, n_out, in_channels, deps, train, head_sizes)

    def train(self, spec: CandidateSpec, job: TrainingJob) -> Trained:
        train, valid = job.splits(spec)
        contract = job.contract(spec)
        settings = job.settings
        if self.learning_rate_scale != 1.0:
            settings = settings.model_copy(update={"learning_rate": settings.learning_rate * self.learning_rate_scale})
        channels, mean, std = self.inputs(spec, train, job.stored, job.deps)
        targets = job.targets
        n_out = sum(targets.head_sizes) if spec.kind == "pretext" else len(targets.labels)
        net, facts = self.network(spec, settings, n_out, len(channels), job.deps, train, targets.head_sizes)
        scorer = TorchScorer(net, contract, channels, mean, std)
        hs = settings.hashing
        head = HeadSpec(spec.kind, targets.head_sizes,
                        class_weights(train.y, len(targets.labels)) if spec.kind == "single" else None,
                        hs.quantisation_weight, hs.balance_weight, hs.loss)
        result = fit(scorer, train, valid, head, settings, epochs=self.epochs(settings), checkpoint=job.checkpoint,
                     on_epoch=job.on_epoch, floor_db=job.feature_settings.db_floor)
        best = result.history[result.best_epoch - 1] if result.history else {}
        params = {"architecture": spec.arch, "input_maps": [job.stored[c] for c in channels],
                  "parameters": sum(p.numel() for p in net.parameters()),
                  "trainable_parameters": sum(p.numel() for p in net.parameters() if p.requires_grad), **facts}
        summary = {"best_epoch": result.best_epoch, "epochs": len(result.history), "valid_score": best.get("valid_score"),
                   "seconds": round(result.seconds, 1), "device": result.device, "precision": result.precision,
                   "resumed_from_epoch": result.resumed_from,
                   "n_train_segments": len(train), "n_valid_segments": len(valid)}
        return Trained(result.scorer, result.history, params, summary)


class OnBackboneFamily(NetworkFamily):
    """A network on the pretext backbone's trunk: it reads what the backbone read, normalised alike."""

    def inputs(self, spec: CandidateSpec, train: SegmentSplit, stored: tuple[str, ...], deps: dict[str, Any]) -> Inputs:
        backbone: TorchScorer = deps["backbone"]
        return backbone.channels.tolist(), backbone.mean.flatten().numpy(), backbone.std.flatten().numpy()
