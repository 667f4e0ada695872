"""The maps on a torch device, many tracks per call: HPSS median filters, soft masks, mel and dB.

The same arithmetic as ``chorus.features.dsp`` (librosa's HPSS definition, float32 throughout), so
the maps agree with the numpy chain to ~1e-5 dB. The STFT stays librosa's, on the CPU: another
FFT's float32 rounding (scipy's measured here; cuFFT's is another again) moves near-silent mel
bands of the percussive map by up to ~0.05 dB against the reference chain, over the 0.01 dB
tolerance, and the median filters (90% of the chain) are what a device speeds up.

Tracks are batched along time: each track's magnitude is padded on both sides as scipy pads it
(``mode="reflect"``, numpy's "symmetric"), the padded tracks are laid end to end, one sliding
median runs over the whole row, and each track keeps only the windows that lie inside its own
padded span. The frequency median needs no care: columns are independent.
"""

from __future__ import annotations

import numpy as np
import torch

from chorus.config import FeatureSettings
from chorus.features.dsp import AMIN, DB_REFERENCE, FeatureExtractor, mel_filterbank


def torch_device(name: str = "auto") -> torch.device:
    """``auto``: the first CUDA device when there is one, else the CPU."""
    if name != "auto":
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def symmetric_index(length: int, pad: int, device: torch.device) -> torch.Tensor:
    """Indices of ``np.pad(x, pad, mode="symmetric")`` along an axis of ``length`` (any pad width:
    the pattern repeats with period 2 * length, as numpy's does)."""
    positions = torch.arange(-pad, length + pad, device=device) % (2 * length)
    return torch.where(positions < length, positions, 2 * length - 1 - positions)


def sliding_median(x: torch.Tensor, window: int, dim: int, chunk: int) -> torch.Tensor:
    """Median of every ``window`` consecutive values along ``dim`` of an already padded tensor
    (odd window: the middle value, exactly, as scipy's median filter), in chunks of ``chunk``
    output positions along the other axis to bound the device memory of the unfolded windows."""
    other = 1 - dim
    parts = []
    for start in range(0, x.shape[other], chunk):
        block = x.narrow(other, start, min(chunk, x.shape[other] - start))
        parts.append(block.unfold(dim, window, 1).median(dim=-1).values)
    return torch.cat(parts, dim=other)


class TorchFeatureExtractor(FeatureExtractor):
    """``FeatureExtractor`` whose maps are computed on a torch device, a batch of tracks at once
    (``analyse_batch``); decoding, the STFT, segmenting and MFCC statistics stay on the CPU."""

    def __init__(self, settings: FeatureSettings, device: str = "auto", chunk_frames: int = 2048) -> None:
        super().__init__(settings)
        self.device = torch_device(device)
        self.chunk_frames = chunk_frames
        self.mel_device = torch.from_numpy(mel_filterbank(settings)).to(self.device)

    def describe(self) -> dict[str, str]:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return {"backend": "torch", "device": str(self.device), "device_name": name, "torch": torch.__version__}

    def analyse(self, y: np.ndarray) -> dict[str, np.ndarray]:
        return self.analyse_batch([y])[0]

    def analyse_batch(self, ys: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        magnitudes = [torch.from_numpy(self.stft_magnitude(y)) for y in ys]
        return self.maps_of_magnitudes(magnitudes)

    @torch.no_grad()
    def maps_of_magnitudes(self, magnitudes: list[torch.Tensor]) -> list[dict[str, np.ndarray]]:
        s = self.settings
        frames = [int(m.shape[1]) for m in magnitudes]
        magnitude = torch.cat(magnitudes, dim=1).to(self.device, torch.float32)
        power = magnitude * magnitude
        maps = {"logmel": self.to_db_device(power)}
        if s.hpss:
            harm, perc = self.median_filters(magnitude, frames)
            for name, part in zip(("harmonic", "percussive"), self.hpss_powers(power, harm, perc), strict=True):
                maps[name] = self.to_db_device(part)
        cpu = {name: m.cpu().numpy() for name, m in maps.items()}
        edges = np.cumsum([0, *frames])
        return [{name: np.ascontiguousarray(m[:, a:b]) for name, m in cpu.items()}
                for a, b in zip(edges[:-1], edges[1:], strict=True)]

    def median_filters(self, magnitude: torch.Tensor, frames: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Median across time (per track, within its own padding) and across frequency."""
        k = self.settings.hpss_kernel
        half = k // 2
        # time: each track padded by its own symmetric reflection, laid end to end
        index, keep, offset = [], [], 0
        for n in frames:
            index.append(symmetric_index(n, half, magnitude.device) + offset)
            offset += n
        padded = magnitude.index_select(1, torch.cat(index))
        windows = sliding_median(padded, k, dim=1, chunk=self.chunk_frames)  # a window starts at every column
        start = 0
        for n in frames:
            keep.append(torch.arange(start, start + n, device=magnitude.device))
            start += n + 2 * half
        harm = windows.index_select(1, torch.cat(keep))
        perc = sliding_median(magnitude.index_select(0, symmetric_index(magnitude.shape[0], half, magnitude.device)),
                              k, dim=0, chunk=self.chunk_frames)
        return harm, perc

    @staticmethod
    def hpss_powers(power: torch.Tensor, harm: torch.Tensor, perc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``chorus.features.hpss_powers``: soft masks (power 2), zeros split evenly."""
        harm = harm * harm
        perc = perc * perc
        total = harm + perc
        empty = total <= torch.finfo(torch.float32).tiny
        total = torch.where(empty, torch.ones_like(total), total)
        mask_h = torch.where(empty, torch.full_like(harm, 0.5), harm) / total
        mask_p = torch.where(empty, torch.full_like(perc, 0.5), perc) / total
        return mask_h * mask_h * power, mask_p * mask_p * power

    def to_db_device(self, power: torch.Tensor) -> torch.Tensor:
        """librosa.power_to_db(mel @ power, ref=1.0, amin=1e-10, top_db=None), floored."""
        mel = self.mel_device @ power
        db = 10.0 * torch.log10(torch.clamp(mel, min=AMIN)) - 10.0 * float(np.log10(max(AMIN, DB_REFERENCE)))
        return torch.clamp(db, min=self.settings.db_floor)


def extractor_kind(settings: FeatureSettings) -> str:
    """Which chain extracts: ``numpy`` (the CPU default) or ``torch`` (``features.backend``;
    ``auto`` picks torch only where CUDA is available)."""
    if settings.backend == "auto":
        return "torch" if torch.cuda.is_available() else "numpy"
    return settings.backend
