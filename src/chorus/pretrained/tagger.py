"""musicnn as a chorus network: it reads the stored maps every candidate reads ((batch, 1, 96,
frames) log-mel in dB of ``musicnn_features``) and has ``forward`` (tag logits, or a new head's)
and ``embed`` (max and mean pools of the mid-end: 1,506 values for musicnn)."""

from __future__ import annotations

import torch
from torch import nn

from chorus.models.blueprint import recorded, register_network
from chorus.pretrained.frontend import musicnn_input
from chorus.pretrained.musicnn import Musicnn, MusicnnVgg


@register_network
class PretrainedTagger(nn.Module):
    """One of musicnn's networks on stored dB maps; with ``n_out`` a new linear head on its
    embedding replaces the 50 tags (``dropout`` before it). Fine-tuning trains the new head and,
    with ``tune_midend``, musicnn's mid end; the front end (most of the computation) and its batch
    statistics stay as pretrained."""

    @recorded
    def __init__(self, net: Musicnn | MusicnnVgg, n_out: int | None = None, dropout: float = 0.5,
                 tune_midend: bool = False) -> None:
        super().__init__()
        self.net = net
        self.embedding_size = 2 * net.pooled_channels if isinstance(net, Musicnn) else 2 * net.head.in_features
        self.head = nn.Linear(self.embedding_size, n_out) if n_out else None
        # the pooled features span ~1e-6 to ~100: normalised before a fresh head (as the probe standardises)
        self.norm = nn.BatchNorm1d(self.embedding_size) if n_out else None
        self.dropout = nn.Dropout(dropout)
        self.tune_midend = tune_midend and isinstance(net, Musicnn)
        if n_out:
            net.requires_grad_(False)
            if isinstance(net, Musicnn) and self.tune_midend:
                net.midend.requires_grad_(True)

    def train(self, mode: bool = True) -> PretrainedTagger:
        super().train(mode)
        self.net.eval()  # the pretrained parts keep their batch statistics
        if isinstance(self.net, Musicnn) and self.tune_midend:
            self.net.midend.train(mode)
        return self

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, 1, 96, frames) dB -> (batch, embedding_size)."""
        return self.net(musicnn_input(x[:, 0])).embedding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.head is None or self.norm is None:
            return self.net(musicnn_input(x[:, 0])).logits
        return self.head(self.dropout(self.norm(self.embed(x))))


@register_network
class MusicnnTrunk(nn.Module):
    """musicnn's front end and mid end as a trunk of conv blocks (what CRNN hashing reads):
    ``feature_maps`` gives each front-end branch's output and each mid-end layer's, each of
    shape (batch, channels, 1, frames), from stored (batch, 1, 96, frames) dB maps."""

    @recorded
    def __init__(self, net: Musicnn) -> None:
        super().__init__()
        self.net = net

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        n = self.net
        patches = n.input_bn(musicnn_input(x[:, 0]).unsqueeze(1))
        branches = [block(patches) for block in n.frontend]
        cnn1 = n.midend[0](torch.cat(branches, dim=1))
        cnn2 = n.midend[1](cnn1) + cnn1
        cnn3 = n.midend[2](cnn2) + cnn2
        return [m.unsqueeze(2) for m in (*branches, cnn1, cnn2, cnn3)]
