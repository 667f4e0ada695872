"""The networks of docs/method.md ("Models and baselines"). Every one takes (batch, channels, bands, frames) and has
``embed`` (the penultimate layer: semantic vectors, and features for the SVM / ELM baselines)."""

from __future__ import annotations

from typing import Protocol, cast

import torch
import torch.nn.functional as F
from torch import nn

from chorus.models.blueprint import recorded, register_network


@register_network
class PaperCNN(nn.Module):
    """The article's network, exactly: 64x64 input, conv 5x5 x5, average pool 2, conv 5x5 x10,
    average pool 2 -> 10 x 13 x 13 = 1,690 features, fully connected, output. The stored map is
    area-pooled to 64x64 first (any input of at least 64x64 works)."""

    input_size = (64, 64)
    embedding_size = 1690

    @recorded
    def __init__(self, n_out: int, in_channels: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 5, kernel_size=5)
        self.conv2 = nn.Conv2d(5, 10, kernel_size=5)
        self.pool = nn.AvgPool2d(2)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.embedding_size, n_out)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(x, self.input_size)
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))


class ConvBlock(nn.Module):
    """3x3 conv + batch norm + ReLU (+ a second conv and a skip connection when residual), then
    max pooling. ``pool`` is (freq, time)."""

    def __init__(self, c_in: int, c_out: int, residual: bool = False, pool: tuple[int, int] = (2, 2)) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.residual = residual
        if residual:
            self.conv2 = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                                       nn.BatchNorm2d(c_out))
            self.skip = nn.Identity() if c_in == c_out else nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.pool = nn.MaxPool2d(pool, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.residual:
            y = self.conv2(y) + self.skip(x)
        return self.pool(F.relu(y))


@register_network
class ShortChunkCNN(nn.Module):
    """Short-chunk CNN (Won et al. 2020, the design leading MagnaTagATune results): stacked 3x3
    conv blocks over ~3.7 s chunks of 128-band log-mel, global max pooling, a dense layer, output.
    ``residual`` gives the ResNet variant. ``blocks`` are exposed for CRNNH."""

    @recorded
    def __init__(self, n_out: int, in_channels: int = 1, channels: tuple[int, ...] = (32, 64, 128, 128),
                 residual: bool = False, dropout: float = 0.3) -> None:
        super().__init__()
        widths = [in_channels, *channels]
        self.blocks = nn.ModuleList(ConvBlock(a, b, residual) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.dense = nn.Sequential(nn.Linear(widths[-1], widths[-1]), nn.BatchNorm1d(widths[-1]), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(widths[-1], n_out)
        self.embedding_size = widths[-1]

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for block in self.blocks:
            x = block(x)
            maps.append(x)
        return maps

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.dense(torch.amax(x, dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))


@register_network
class CRNN(nn.Module):
    """Conv front (pooling frequency harder than time), frequency collapsed, a GRU (128 units)
    over time; the last hidden state is the embedding."""

    @recorded
    def __init__(self, n_out: int, in_channels: int = 1, channels: tuple[int, ...] = (32, 64, 128),
                 hidden: int = 128, dropout: float = 0.3) -> None:
        super().__init__()
        widths = [in_channels, *channels]
        self.blocks = nn.ModuleList(ConvBlock(a, b, pool=(4, 2)) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.gru = nn.GRU(widths[-1], hidden, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, n_out)
        self.embedding_size = hidden

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        sequence = x.amax(dim=2).transpose(1, 2)  # (batch, time, channels)
        _, last = self.gru(sequence.float())  # GRU kernels have no bf16 path on CPU
        return last[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))


@register_network
class PretextCNN(nn.Module):
    """The backbone pretrained on a pretext task: one short-chunk CNN trunk, one head per pretext
    label (e.g. style and instrument family). Its ``trunk`` is reused frozen or fine-tuned."""

    @recorded
    def __init__(self, n_out: list[int], in_channels: int = 1, channels: tuple[int, ...] = (32, 64, 128, 128),
                 dropout: float = 0.3) -> None:
        super().__init__()
        self.trunk = ShortChunkCNN(1, in_channels, channels, dropout=dropout)
        self.heads = nn.ModuleList(nn.Linear(self.trunk.embedding_size, n) for n in n_out)
        self.embedding_size = self.trunk.embedding_size

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk.embed(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.trunk.dropout(self.embed(x))
        return torch.cat([head(e) for head in self.heads], dim=1)


class OnPretrainedTrunk(nn.Module):
    """Base of networks built on a pretrained trunk: ``freeze`` keeps the trunk's weights and its
    batch-norm statistics fixed (the trunk stays in eval mode while the rest trains)."""

    def __init__(self, trunk: nn.Module, freeze: bool) -> None:
        super().__init__()
        self.trunk = trunk
        self.freeze = freeze
        if freeze:
            trunk.requires_grad_(False)

    def train(self, mode: bool = True) -> OnPretrainedTrunk:
        super().train(mode)
        if self.freeze:
            self.trunk.eval()
        return self


@register_network
class TransferCNN(OnPretrainedTrunk):
    """A pretrained trunk with a new head."""

    trunk: ShortChunkCNN

    @recorded
    def __init__(self, trunk: ShortChunkCNN, n_out: int, freeze: bool = True, dropout: float = 0.3) -> None:
        super().__init__(trunk, freeze)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(trunk.embedding_size, n_out)
        self.embedding_size = trunk.embedding_size

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk.embed(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))


class ConvTrunk(Protocol):
    """A pretrained trunk CRNN hashing reads: each conv block's output, (batch, channels, height, time)."""

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]: ...


@torch.no_grad()
def select_maps_by_variance(trunk: ConvTrunk, batches: list[torch.Tensor], per_layer: int) -> list[torch.Tensor]:
    """For each conv block, the indices of the ``per_layer`` channels whose activations vary most
    over the given training batches (the article's selection of feature maps). The caller puts
    ``trunk`` in eval mode, so its batch statistics are those the hash will read through."""
    sums: list[torch.Tensor] = []
    squares: list[torch.Tensor] = []
    count = 0
    for batch in batches:
        maps = trunk.feature_maps(batch.float())
        for i, m in enumerate(maps):
            m = m.float().transpose(0, 1).reshape(m.shape[1], -1)
            if len(sums) <= i:
                sums.append(torch.zeros(m.shape[0]))
                squares.append(torch.zeros(m.shape[0]))
            sums[i] += m.sum(1)
            squares[i] += (m**2).sum(1)
        count += batch.shape[0]
    chosen = []
    for s, q, m in zip(sums, squares, maps, strict=True):
        n = count * m.shape[2] * m.shape[3]
        variance = q / n - (s / n) ** 2
        k = min(per_layer, len(variance))
        chosen.append(torch.sort(torch.topk(variance, k).indices).values)
    return chosen


@register_network
class CRNNH(OnPretrainedTrunk):
    """CRNN hashing: from each conv block of a pretrained trunk, the selected feature maps, each
    pooled to a ``pooled x pooled`` grid; one vector per layer, a sequence over layers read by a
    GRU (128), a k-bit tanh head. ``forward`` gives relaxed codes in (-1, 1); ``codes`` their sign.
    ``classify`` maps codes to the task's classes (the task loss)."""

    @recorded
    def __init__(self, trunk: nn.Module, selected: list[torch.Tensor] | list[list[int]], bits: int, n_classes: int,
                 pooled: int = 2, hidden: int = 128, freeze: bool = True) -> None:
        super().__init__(trunk, freeze)
        self.pooled = pooled
        self.bits = bits
        for i, index in enumerate(selected):
            self.register_buffer(f"selected_{i}", torch.as_tensor(index).long())
        self.n_layers = len(selected)
        per_layer = max(len(s) for s in selected) * pooled * pooled
        # Layers may offer fewer maps than asked; each is projected to the same width.
        self.project = nn.ModuleList(nn.Linear(len(s) * pooled * pooled, per_layer) for s in selected)
        self.gru = nn.GRU(per_layer, hidden, batch_first=True)
        self.code = nn.Linear(hidden, bits)
        self.classifier = nn.Linear(bits, n_classes)
        self.embedding_size = hidden

    def layer_sequence(self, x: torch.Tensor) -> torch.Tensor:
        steps = []
        for i, m in enumerate(cast(ConvTrunk, self.trunk).feature_maps(x)):
            chosen = m[:, getattr(self, f"selected_{i}")]
            rows = min(self.pooled, chosen.shape[2])  # a map one band high (musicnn's) pools along time alone
            vector = F.adaptive_avg_pool2d(chosen, (rows, self.pooled * self.pooled // rows)).flatten(1).float()
            steps.append(self.project[i](vector))
        return torch.stack(steps, dim=1)  # (batch, layers, width)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        _, last = self.gru(self.layer_sequence(x))
        return last[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.code(self.embed(x)))

    def classify(self, relaxed: torch.Tensor) -> torch.Tensor:
        return self.classifier(relaxed)

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(self(x) >= 0, 1.0, -1.0)


def quantisation_loss(relaxed: torch.Tensor) -> torch.Tensor:
    """L1 distance of each output to the nearest of +-1."""
    return (relaxed.abs() - 1.0).abs().mean()


def balance_loss(relaxed: torch.Tensor) -> torch.Tensor:
    """Each bit's batch mean pulled to 0 (each bit 1 about half the time)."""
    return (relaxed.mean(dim=0) ** 2).mean()


def pairwise_similarity_loss(relaxed: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Scaled inner products of codes matched to +1 (same label) / -1 (different)."""
    similarity = (targets[:, None] == targets[None, :]).float() * 2 - 1
    inner = relaxed @ relaxed.T / relaxed.shape[1]
    return ((inner - similarity) ** 2).mean()
