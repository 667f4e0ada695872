"""A small CNN over log-mel segments, wrapped with the facts needed to use it safely."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from chorus.errors import StaleFeaturesError


class StyleCNN(nn.Module):
    """Stacked 3x3 conv + batch norm + ReLU + max pool blocks, global average pooling, linear head.

    Input (batch, 1, n_mels, frames); any frame count works thanks to global pooling."""

    def __init__(self, n_classes: int, channels: tuple[int, ...] = (16, 32, 64), dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = 1
        for width in channels:
            layers += [
                nn.Conv2d(previous, width, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            previous = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(previous, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.head(self.dropout(x))


class SegmentClassifier(nn.Module):
    """What is registered: normalisation, the network, the class names and the feature-config
    hash. ``forward`` takes raw stored log-mel (batch, n_mels, frames) in dB; ``check_features``
    refuses features made with another configuration."""

    def __init__(self, net: nn.Module, classes: list[str], feature_config_hash: str,
                 mean: float, std: float, task: str) -> None:
        super().__init__()
        self.net = net
        self.classes = list(classes)
        self.feature_config_hash = feature_config_hash
        self.task = task
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def check_features(self, config_hash: str) -> None:
        if config_hash != self.feature_config_hash:
            raise StaleFeaturesError(
                f"model was trained on features {self.feature_config_hash}, got features {config_hash}: "
                "re-extract with the model's feature settings or retrain"
            )

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        x = (logmel - self.mean) / self.std
        return self.net(x.unsqueeze(1))

    @torch.no_grad()
    def predict_proba(self, logmel: np.ndarray, batch_size: int = 256) -> np.ndarray:
        self.eval()
        device = next(self.parameters()).device
        out = []
        for start in range(0, len(logmel), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(logmel[start : start + batch_size])).to(device)
            out.append(torch.softmax(self(batch), dim=1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)
