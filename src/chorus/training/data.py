"""Segments as training data: the split of a feature set, track-level pooling, augmentation,
and the batches of each epoch (seeded by (seed, epoch): a resumed run draws what it would have)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from chorus.config import TrainSettings
from chorus.features import FeatureSet


@dataclass
class SegmentSplit:
    """The segments of one split: stored maps, targets, and the track of each segment."""

    x: np.ndarray  # (segments, stored maps, bands, frames) float32
    y: np.ndarray  # (segments,) int64 | (segments, labels) float32 | (segments, heads) int64
    track_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def segment_split(features: FeatureSet, stored_maps: tuple[str, ...], targets: dict[str, Any]) -> SegmentSplit:
    """Segments of the tracks in ``targets`` (track -> target), each with its track's target."""
    ids = features.segments["track_id"].to_numpy()
    mask = np.isin(ids, list(targets))
    chosen = ids[mask]
    x = np.stack([features.maps[name][mask] for name in stored_maps], axis=1) if mask.any() else \
        np.zeros((0, len(stored_maps), *features.logmel.shape[1:]), np.float32)
    y = np.asarray([targets[t] for t in chosen])
    return SegmentSplit(x, y, chosen)


def track_mean(scores: np.ndarray, track_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-track predictions: the mean of the track's segment scores (tracks sorted)."""
    frame = pd.DataFrame(scores)
    frame["track_id"] = track_ids
    mean = frame.groupby("track_id", sort=True).mean()
    return mean.index.to_numpy(), mean.to_numpy()


def track_targets(split: SegmentSplit) -> np.ndarray:
    _, first = np.unique(split.track_ids, return_index=True)
    return split.y[first]  # np.unique sorts, like track_mean


_LN10_OVER_10 = np.float32(np.log(10.0) / 10.0)


def noise_bank(shape: tuple[int, ...], size: int, seed: int) -> np.ndarray:
    """``size`` unit-mean white-noise power fields (exponential per bin, like a periodogram's),
    drawn once: sampling fresh ones per batch would cost more than the training step."""
    return np.random.default_rng([seed, 7]).standard_exponential(size=(size, *shape), dtype=np.float32)


def level_and_noise(x: np.ndarray, rng: np.random.Generator, level_db: float, noise_probability: float,
                    snr_db: tuple[float, float], floor_db: float, bank: np.ndarray) -> np.ndarray:
    """What a gain change and additive white noise do to dB maps, in place on a batch (examples,
    channels, bands, frames): each example's level moves by up to +-``level_db``; a
    ``noise_probability`` share of examples get a noise field from ``bank`` at a level ``snr_db``
    below the example's mean power in its first channel (the log-mel; later channels, the HPSS
    parts, take half the noise each). Bins at the floor (digital silence) stay there under the
    level change."""
    n = len(x)
    silent = x <= floor_db
    x += rng.uniform(-level_db, level_db, size=(n, 1, 1, 1)).astype(np.float32)
    noisy = np.flatnonzero(rng.random(n) < noise_probability)
    if len(noisy):
        power = np.exp(x[noisy] * _LN10_OVER_10)
        reference = power[:, :1].mean(axis=(1, 2, 3), keepdims=True)
        snr = rng.uniform(snr_db[0], snr_db[1], size=(len(noisy), 1, 1, 1)).astype(np.float32)
        scale = np.where(np.arange(x.shape[1]) == 0, 1.0, 0.5).astype(np.float32).reshape(1, -1, 1, 1)
        power += bank[rng.integers(0, len(bank), len(noisy))] * (reference * np.exp(-snr * _LN10_OVER_10) * scale)
        x[noisy] = np.log(power) / _LN10_OVER_10
        silent[noisy] = False  # noise fills silence
    np.maximum(x, floor_db, out=x)
    np.copyto(x, np.float32(floor_db), where=silent)
    return x


class SegmentBatches(torch.utils.data.Dataset):
    """Batches cut from in-RAM (or memory-mapped) segments: a random time crop per example, a
    random level change and additive noise (``level_and_noise``), and SpecAugment-style masks
    (filled with the map's mean), drawn from a per-batch seed."""

    def __init__(self, split: SegmentSplit, settings: TrainSettings, fill: np.ndarray, augment: bool,
                 channels: list[int] | None = None, floor_db: float = -100.0) -> None:
        self.split = split
        self.channels = list(range(split.x.shape[1])) if channels is None else list(channels)
        # A contiguous run of channels is a slice (a view); others need fancy indexing.
        first = self.channels[0] if self.channels else 0
        self.cut = (slice(first, first + len(self.channels)) if self.channels == list(range(first, first + len(self.channels)))
                    else self.channels)
        frames = split.x.shape[3]
        self.crop = max(8, int(frames * settings.crop_fraction)) if augment else frames
        self.settings = settings
        self.fill = np.asarray(fill, np.float32).reshape(-1, 1, 1)
        self.augment = augment
        self.floor_db = floor_db
        self.bank = (noise_bank((len(self.channels), split.x.shape[2], self.crop), 64, settings.seed)
                     if augment and settings.noise_probability > 0 else np.ones((1, 1, 1, 1), np.float32))

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, item: tuple[int, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        seed, index = item
        source = self.split.x
        if not self.augment:
            return (torch.from_numpy(np.ascontiguousarray(source[index][:, self.cut], np.float32)),
                    torch.from_numpy(self.split.y[index]))
        rng = np.random.default_rng(seed)
        s, crop, bands = self.settings, self.crop, source.shape[2]
        offsets = rng.integers(0, source.shape[3] - crop + 1, size=len(index))
        # One copy per example, straight from the (possibly memory-mapped) store into the batch.
        x = np.empty((len(index), len(self.channels), bands, crop), np.float32)
        for i, (j, o) in enumerate(zip(index, offsets, strict=True)):
            x[i] = source[j, self.cut, :, o : o + crop]
        if s.level_db > 0 or s.noise_probability > 0:
            level_and_noise(x, rng, s.level_db, s.noise_probability, s.noise_snr_db, self.floor_db, self.bank)
        widths_t = rng.integers(0, min(s.mask_width, crop // 4) + 1, size=(len(index), s.time_masks, 1))
        widths_f = rng.integers(0, min(s.mask_width, bands // 4) + 1, size=(len(index), s.freq_masks, 1))
        starts_t = rng.integers(0, crop - widths_t + 1)
        starts_f = rng.integers(0, bands - widths_f + 1)
        frames_at, bands_at = np.arange(crop), np.arange(bands)
        in_time = np.asarray(((frames_at >= starts_t) & (frames_at < starts_t + widths_t)).any(axis=1))  # (batch, crop)
        in_band = np.asarray(((bands_at >= starts_f) & (bands_at < starts_f + widths_f)).any(axis=1))  # (batch, bands)
        masked = in_time[:, None, None, :] | in_band[:, None, :, None]
        np.copyto(x, self.fill[None], where=masked)
        return torch.from_numpy(x), torch.from_numpy(self.split.y[index])


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[tuple[int, np.ndarray]]:
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if batches and len(batches[-1]) < 2:  # batch norm needs two examples
        batches.pop()
    seeds = rng.integers(0, 2**31, size=len(batches))
    return [(int(s), np.sort(b)) for s, b in zip(seeds, batches, strict=True)]


class Prefetched:
    """Iterates ``source`` one item ahead in a background thread, so the next batch is cut while
    the current one trains (numpy copies and torch kernels release the GIL). Order is kept and an
    exception in the source is raised here."""

    _END = object()

    def __init__(self, source: Any, depth: int = 2) -> None:
        import queue
        self._queue: Any = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._fill, args=(iter(source),), daemon=True)
        self._thread.start()

    def _fill(self, source: Any) -> None:
        try:
            for item in source:
                self._queue.put(item)
            self._queue.put(self._END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._queue.put(exc)

    def __iter__(self) -> Prefetched:
        return self

    def __next__(self) -> Any:
        item = self._queue.get()
        if item is self._END:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item


class EpochPlan(torch.utils.data.Sampler):
    """The batches of the current epoch (seed, indices), set by the training loop each epoch."""

    def __init__(self) -> None:
        self.plan: list[tuple[int, np.ndarray]] = []

    def __iter__(self) -> Any:
        return iter(list(self.plan))

    def __len__(self) -> int:
        return len(self.plan)
