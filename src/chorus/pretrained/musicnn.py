"""musicnn's taggers (Pons & Serra, 2019) in PyTorch, layer for layer, loading the original weights.

Two architectures trained on MagnaTagATune (MTT) and the Million Song Dataset (MSD), 50 tags each:

- ``musicnn``: a musically motivated front end (timbral filters spanning 40% and 70% of the mel
  axis, temporal filters of 128, 64 and 32 frames, each max-pooled over frequency), a dense mid end
  of three 1-D convolutions with residual connections, and a back end pooling over time (max and
  mean) into a dense layer of 200 units.
- ``vgg``: five 3x3 convolution blocks of 128 filters with max pooling, then one dense layer.

Inputs are log-mel patches ``(batch, 187 frames, 96 bands)`` (see ``chorus.pretrained.frontend``).
TensorFlow's layout and conventions are kept where they change numbers: batch normalisation with
epsilon 1e-3 after the ReLU, "same" padding that puts the odd pixel at the end, NHWC flattening.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from chorus.models.blueprint import recorded, register_network

TF_BN_EPSILON = 1e-3
N_MELS = 96
N_FRAMES = 187

MTT_TAGS = ("guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano", "ambient",
            "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing", "vocals", "no vocals",
            "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man",
            "classic", "choir", "voice", "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello",
            "no voice", "weird", "country", "metal", "female voice", "choral")
MSD_TAGS = ("rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s", "alternative rock", "jazz",
            "beautiful", "metal", "chillout", "male vocalists", "classic rock", "soul", "indie rock", "Mellow", "electronica",
            "80s", "folk", "90s", "chill", "instrumental", "punk", "oldies", "blues", "hard rock", "ambient", "acoustic",
            "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country", "easy listening", "sexy",
            "catchy", "funk", "electro", "heavy metal", "Progressive rock", "60s", "rnb", "indie pop", "sad", "House", "happy")
TAGS = {"MTT": MTT_TAGS, "MSD": MSD_TAGS}


@dataclass(frozen=True)
class MusicnnOutput:
    """What one forward pass gives, per patch.

    Attributes
    ----------
    logits : (batch, 50) before the sigmoid; ``taggram = sigmoid(logits)``.
    penultimate : (batch, 200) for musicnn (the batch-normalised dense layer), (batch, 256) for vgg.
    max_pool, mean_pool : (batch, 753) musicnn's mid-end features pooled over time; for vgg both
        are the flattened last pooling (batch, 256).
    """

    logits: torch.Tensor
    penultimate: torch.Tensor
    max_pool: torch.Tensor
    mean_pool: torch.Tensor

    @property
    def taggram(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    @property
    def embedding(self) -> torch.Tensor:
        """The transfer embedding: max and mean pools side by side."""
        return torch.cat([self.max_pool, self.mean_pool], dim=1)


def _pad_time_same(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """TensorFlow's "same" padding along time (dim 2 of NCHW): the odd pixel goes at the end."""
    total = kernel - 1
    return F.pad(x, (0, 0, total // 2, total - total // 2))


class _FreqPooledConv(nn.Module):
    """Conv2d over (time, frequency) -> ReLU -> batch norm -> max over frequency: (batch, filters, time)."""

    def __init__(self, filters: int, kernel: tuple[int, int], same_time_padding: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, filters, kernel)
        self.bn = nn.BatchNorm2d(filters, eps=TF_BN_EPSILON)
        self.kernel, self.same = kernel, same_time_padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _pad_time_same(x, self.kernel[0]) if self.same else F.pad(x, (0, 0, 3, 3))
        return self.bn(F.relu(self.conv(x))).amax(dim=3)


class _MidConv(nn.Module):
    """A mid-end layer: 1-D convolution over time (kernel 7, zero padding 3) -> ReLU -> batch norm."""

    def __init__(self, in_channels: int, filters: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, filters, 7, padding=3)
        self.bn = nn.BatchNorm1d(filters, eps=TF_BN_EPSILON)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


@register_network
class Musicnn(nn.Module):
    """musicnn: input (batch, 187, 96) log-mel patches -> ``MusicnnOutput``."""

    architecture = "musicnn"

    @recorded
    def __init__(self, n_tags: int = 50, midend_filters: int = 64, backend_units: int = 200) -> None:
        super().__init__()
        self.input_bn = nn.BatchNorm2d(1, eps=TF_BN_EPSILON)
        timbral = int(1.6 * 128)
        temporal = int(1.6 * 32)
        self.frontend = nn.ModuleList([
            _FreqPooledConv(timbral, (7, int(0.4 * N_MELS)), same_time_padding=False),
            _FreqPooledConv(timbral, (7, int(0.7 * N_MELS)), same_time_padding=False),
            _FreqPooledConv(temporal, (128, 1), same_time_padding=True),
            _FreqPooledConv(temporal, (64, 1), same_time_padding=True),
            _FreqPooledConv(temporal, (32, 1), same_time_padding=True),
        ])
        frontend_channels = 2 * timbral + 3 * temporal
        self.midend = nn.ModuleList([_MidConv(frontend_channels, midend_filters), _MidConv(midend_filters, midend_filters),
                                     _MidConv(midend_filters, midend_filters)])
        self.pooled_channels = frontend_channels + 3 * midend_filters
        self.pool_bn = nn.BatchNorm1d(2 * self.pooled_channels, eps=TF_BN_EPSILON)
        self.dense = nn.Linear(2 * self.pooled_channels, backend_units)
        self.dense_bn = nn.BatchNorm1d(backend_units, eps=TF_BN_EPSILON)
        self.head = nn.Linear(backend_units, n_tags)
        self.dropout = nn.Dropout(0.5)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Mid-end feature map (batch, 753, time): front end, then each mid-end layer's output."""
        x = self.input_bn(x.unsqueeze(1))
        front = torch.cat([block(x) for block in self.frontend], dim=1)
        cnn1 = self.midend[0](front)
        cnn2 = self.midend[1](cnn1) + cnn1
        cnn3 = self.midend[2](cnn2) + cnn2
        return torch.cat([front, cnn1, cnn2, cnn3], dim=1)

    def forward(self, x: torch.Tensor) -> MusicnnOutput:
        feature_map = self.features(x)
        max_pool, mean_pool = feature_map.amax(dim=2), feature_map.mean(dim=2)
        interleaved = torch.stack([max_pool, mean_pool], dim=2).flatten(1)  # TensorFlow flattens (753, 2) channel-major
        pooled = self.dropout(self.pool_bn(interleaved))
        penultimate = self.dense_bn(F.relu(self.dense(pooled)))
        return MusicnnOutput(self.head(self.dropout(penultimate)), penultimate, max_pool, mean_pool)


@register_network
class MusicnnVgg(nn.Module):
    """musicnn's vgg baseline: input (batch, 187, 96) log-mel patches -> ``MusicnnOutput``."""

    architecture = "vgg"
    pools = ((4, 1, 2, 2), (2, 2, 2, 2), (2, 2, 2, 2), (2, 2, 2, 2), (4, 4, 4, 4))  # kernel (t, f), stride (t, f)

    @recorded
    def __init__(self, n_tags: int = 50, filters: int = 128) -> None:
        super().__init__()
        self.input_bn = nn.BatchNorm2d(1, eps=TF_BN_EPSILON)
        self.convs = nn.ModuleList([nn.Conv2d(1 if i == 0 else filters, filters, 3, padding=1) for i in range(5)])
        self.bns = nn.ModuleList([nn.BatchNorm2d(filters, eps=TF_BN_EPSILON) for _ in range(5)])
        self.head = nn.Linear(2 * filters, n_tags)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> MusicnnOutput:
        x = self.input_bn(x.unsqueeze(1))
        for conv, bn, (kt, kf, st, sf) in zip(self.convs, self.bns, self.pools, strict=True):
            x = F.max_pool2d(bn(F.relu(conv(x))), (kt, kf), (st, sf))
        flat = x.permute(0, 2, 3, 1).flatten(1)  # TensorFlow flattens NHWC
        return MusicnnOutput(self.head(self.dropout(flat)), flat, flat, flat)


def _conv2d(weights: Mapping[str, np.ndarray], name: str) -> dict[str, torch.Tensor]:
    kernel = torch.from_numpy(weights[f"{name}/kernel"]).permute(3, 2, 0, 1)  # (h, w, in, out) -> (out, in, h, w)
    return {"weight": kernel.contiguous(), "bias": torch.from_numpy(weights[f"{name}/bias"])}


def _conv1d(weights: Mapping[str, np.ndarray], name: str) -> dict[str, torch.Tensor]:
    kernel = torch.from_numpy(weights[f"{name}/kernel"])[:, :, 0, :].permute(2, 1, 0)  # (7, in, 1, out) -> (out, in, 7)
    return {"weight": kernel.contiguous(), "bias": torch.from_numpy(weights[f"{name}/bias"])}


def _dense(weights: Mapping[str, np.ndarray], name: str) -> dict[str, torch.Tensor]:
    return {"weight": torch.from_numpy(weights[f"{name}/kernel"]).T.contiguous(), "bias": torch.from_numpy(weights[f"{name}/bias"])}


def _batch_norm(weights: Mapping[str, np.ndarray], name: str) -> dict[str, torch.Tensor]:
    return {"weight": torch.from_numpy(weights[f"{name}/gamma"]), "bias": torch.from_numpy(weights[f"{name}/beta"]),
            "running_mean": torch.from_numpy(weights[f"{name}/moving_mean"]),
            "running_var": torch.from_numpy(weights[f"{name}/moving_variance"]),
            "num_batches_tracked": torch.tensor(0)}


def _indexed(base: str, i: int) -> str:
    return base if i == 0 else f"{base}_{i}"


def musicnn_state_dict(weights: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Map a musicnn TensorFlow checkpoint's variables onto ``Musicnn``'s parameter names.

    TensorFlow numbers layers of a kind in creation order: batch norms 0 (input), 1-5 (front end),
    6-8 (mid end), 9 (pooled), 10 (dense); convolutions 0-4 (front end), 5-7 (mid end); dense 0, 1.
    """
    parts: dict[str, dict[str, torch.Tensor]] = {"input_bn": _batch_norm(weights, "batch_normalization")}
    for i in range(5):
        parts[f"frontend.{i}.conv"] = _conv2d(weights, _indexed("conv2d", i))
        parts[f"frontend.{i}.bn"] = _batch_norm(weights, _indexed("batch_normalization", i + 1))
    for i in range(3):
        parts[f"midend.{i}.conv"] = _conv1d(weights, _indexed("conv2d", i + 5))
        parts[f"midend.{i}.bn"] = _batch_norm(weights, _indexed("batch_normalization", i + 6))
    parts["pool_bn"] = _batch_norm(weights, "batch_normalization_9")
    parts["dense"] = _dense(weights, "dense")
    parts["dense_bn"] = _batch_norm(weights, "batch_normalization_10")
    parts["head"] = _dense(weights, "dense_1")
    return _flatten(parts)


def vgg_state_dict(weights: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Map a vgg TensorFlow checkpoint's variables (convolutions named ``1CNN``..``5CNN``) onto ``MusicnnVgg``."""
    parts: dict[str, dict[str, torch.Tensor]] = {"input_bn": _batch_norm(weights, "batch_normalization")}
    for i in range(5):
        parts[f"convs.{i}"] = _conv2d(weights, f"{i + 1}CNN")
        parts[f"bns.{i}"] = _batch_norm(weights, _indexed("batch_normalization", i + 1))
    parts["head"] = _dense(weights, "dense")
    return _flatten(parts)


def _flatten(parts: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {f"{module}.{name}": tensor for module, tensors in parts.items() for name, tensor in tensors.items()}


def build_network(model: str) -> Musicnn | MusicnnVgg:
    """An untrained network for one of the wheel's models: MTT_musicnn, MSD_musicnn, MTT_vgg, MSD_vgg."""
    dataset, _, architecture = model.partition("_")
    if dataset not in TAGS or architecture not in ("musicnn", "vgg"):
        raise ValueError(f"unknown musicnn model {model!r}: expected MTT_musicnn, MSD_musicnn, MTT_vgg or MSD_vgg")
    return Musicnn(len(TAGS[dataset])) if architecture == "musicnn" else MusicnnVgg(len(TAGS[dataset]))


def tensorflow_state_dict(model: str, weights: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The PyTorch state dict of ``model`` from its TensorFlow variables (optimiser slots ignored)."""
    return musicnn_state_dict(weights) if model.endswith("_musicnn") else vgg_state_dict(weights)
