"""musicnn's input as a feature configuration of chorus's own features stage.

musicnn reads log-compressed mel patches: 16 kHz, n_fft 512, hop 256, 96 Slaney mel bands,
``log10(1 + 10000 x)`` of the mel power, 187 frames (3 s) per patch. The features stage stores mel
power in dB re 1.0 (``10 log10 x``), so the stored segments of ``musicnn_features`` hold exactly
that input, and ``musicnn_input`` turns them into it. It computes in float32: the original casts
the power to float16 first, which overflows to inf on loud music.
"""

from __future__ import annotations

import torch

from chorus.config import FeatureSettings
from chorus.pretrained.musicnn import N_FRAMES, N_MELS

MUSICNN_SAMPLE_RATE = 16000


def musicnn_features(base: FeatureSettings) -> FeatureSettings:
    """The feature configuration whose log-mel segments are musicnn's patches; how and where they
    are computed (Dask, shards, backend) stays as in ``base``."""
    return base.model_copy(update={
        "sample_rate": MUSICNN_SAMPLE_RATE, "n_fft": 512, "hop_length": 256, "n_mels": N_MELS, "fmin": 0.0, "fmax": None,
        "segment_frames": N_FRAMES, "segment_hop_frames": N_FRAMES, "db_floor": -100.0, "short_track": "pad",
        "hpss": False, "n_mfcc": 20})


def musicnn_input(logmel_db: torch.Tensor) -> torch.Tensor:
    """musicnn's patches from stored log-mel segments.

    Parameters
    ----------
    logmel_db : torch.Tensor, shape (batch, 96, 187)
        Mel power in dB re 1.0, as the features stage stores it for ``musicnn_features``.

    Returns
    -------
    torch.Tensor, shape (batch, 187, 96), float32 : ``log10(1 + 10000 x)`` of the mel power x
    """
    db = logmel_db.to(torch.float32)
    return torch.log10(1.0 + torch.pow(10.0, db / 10.0 + 4.0)).transpose(1, 2)
