"""Long tracks in blocks: memory bounded by ``features.block_seconds``, not by the track.

The track is decoded and resampled in a stream to a raw float32 file on disk (never held whole
in memory); then each block of segments is computed from just the samples it needs. Every step
continues across block edges as on the whole track: a block's STFT frames read the samples
around them (zeros only beyond the track's ends, as librosa's centred STFT pads), the HPSS time
median sees ``hpss_kernel // 2`` frames either side (reflected only at the track's ends), the
MFCC deltas see their 4 frames of context, and the segment grid is the track's. The maps equal
the whole-track chain's within float32 rounding; only the stored segments are held in memory.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
from pathlib import Path

import bottleneck
import librosa
import numpy as np
import psutil
import soundfile as sf
import soxr

from chorus.audio import AudioProblem, to_mono
from chorus.features.dsp import (
    FeatureExtractor,
    TrackFeatures,
    centered_moving_median,
    cut,
    hpss_powers,
    map_names,
    segment_summary,
)

DELTA_CONTEXT = 4  # librosa.feature.delta's default width 9: four frames either side
READ_SECONDS = 30  # decoding step
SCRATCH_PREFIX = "chorus-long-"  # then the extracting process's pid: chorus-long-<pid>-<random>


def orphaned_scratch(root: Path | None = None) -> list[Path]:
    """Scratch folders of block extractions whose process is gone (a worker killed mid-track
    leaves its decoded samples, about 1 GB per three hours of audio, in the temporary folder)."""
    found = []
    for folder in sorted(Path(root or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*")):
        pid = folder.name.removeprefix(SCRATCH_PREFIX).split("-")[0]
        if folder.is_dir() and pid.isdigit() and not psutil.pid_exists(int(pid)):
            found.append(folder)
    return found


def release_free_heap() -> None:
    """Hand the C heap's free memory back to the system (glibc's ``malloc_trim``): the workers keep
    a large trim threshold for speed, which after a long track would leave its block buffers
    counted against the worker's memory limit while the shard is written."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def is_long(uri: str, block_seconds: float) -> bool:
    """Whether a file is extracted in blocks: longer than two blocks (by its header)."""
    try:
        return sf.info(uri).duration > 2 * block_seconds
    except (sf.LibsndfileError, RuntimeError):
        return False  # the whole-track path reports the problem


def decode_to_file(uri: str, sample_rate: int, path: Path) -> int:
    """Decode -> mono -> resample (soxr, streaming: the same samples as in one go) into ``path``
    as raw float32, a few seconds at a time; returns the number of samples."""
    written = 0
    try:
        with sf.SoundFile(uri) as source, open(path, "wb") as out:
            stream = soxr.ResampleStream(source.samplerate, sample_rate, 1, dtype="float32", quality="HQ") \
                if source.samplerate != sample_rate else None
            step = source.samplerate * READ_SECONDS
            while True:
                data = source.read(step, dtype="float32", always_2d=True)
                last = len(data) < step
                y = to_mono(data)
                if not np.isfinite(y).all():
                    raise AudioProblem("non_finite_samples", f"{int((~np.isfinite(y)).sum())} NaN/inf samples after decoding")
                if stream is not None:
                    y = stream.resample_chunk(y, last=last)
                np.ascontiguousarray(y, np.float32).tofile(out)
                written += len(y)
                if last:
                    return written
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioProblem("truncated", f"decoding failed: {exc}") from None


def read_samples(path: Path, samples: int, start: int, stop: int) -> np.ndarray:
    """Samples [start, stop) of a raw float32 file of ``samples`` samples; zeros outside it."""
    out = np.zeros(stop - start, np.float32)
    low, high = max(start, 0), min(stop, samples)
    if high > low:
        out[low - start : high - start] = np.fromfile(path, np.float32, count=high - low, offset=4 * low)
    return out


def reflected(frames: np.ndarray, total: int) -> np.ndarray:
    """Frame indices mirrored into [0, total) as numpy's ``symmetric`` padding mirrors them."""
    frames = np.where(frames < 0, -frames - 1, frames)
    return np.where(frames >= total, 2 * total - 1 - frames, frames)


class BlockExtractor:
    """The numpy chain over a long track, block by block (see the module's docstring)."""

    def __init__(self, extractor: FeatureExtractor, block_seconds: float) -> None:
        self.extractor, self.settings = extractor, extractor.settings
        s = self.settings
        self.starts_per_block = max(1, int(block_seconds * s.sample_rate / s.hop_length) // s.segment_hop_frames)

    def magnitude(self, path: Path, samples: int, first: int, stop: int) -> np.ndarray:
        """|STFT| frames [first, stop) of the track, as the centred whole-track STFT computes them.

        Returns
        -------
        np.ndarray, shape (1 + n_fft // 2, stop - first), float32
        """
        s = self.settings
        begin = first * s.hop_length - s.n_fft // 2
        chunk = read_samples(path, samples, begin, begin + (stop - first - 1) * s.hop_length + s.n_fft)
        return np.abs(librosa.stft(chunk, n_fft=s.n_fft, hop_length=s.hop_length, center=False))

    def block_maps(self, path: Path, samples: int, frames: int, f0: int, f1: int) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
        """The maps of frames [f0, f1), and the log-mel of [l0, l1) (with the MFCC deltas'
        context) with its first frame l0."""
        s = self.settings
        half = s.hpss_kernel // 2
        reach = max(half, DELTA_CONTEXT) if s.hpss else DELTA_CONTEXT
        g0, g1 = max(0, f0 - reach), min(frames, f1 + reach)
        magnitude = self.magnitude(path, samples, g0, g1)
        l0, l1 = max(0, f0 - DELTA_CONTEXT), min(frames, f1 + DELTA_CONTEXT)
        logmel = self.extractor.to_db(magnitude[:, l0 - g0 : l1 - g0] ** 2)
        maps = {"logmel": logmel[:, f0 - l0 : f1 - l0]}
        if s.hpss:
            around = magnitude[:, reflected(np.arange(f0 - half, f1 + half), frames) - g0]
            harm = np.ascontiguousarray(bottleneck.move_median(around, s.hpss_kernel, axis=1)[:, s.hpss_kernel - 1 :])
            own = np.ascontiguousarray(magnitude[:, f0 - g0 : f1 - g0])
            perc = centered_moving_median(own, s.hpss_kernel, axis=0)
            maps["harmonic"], maps["percussive"] = (self.extractor.to_db(p) for p in hpss_powers(own, harm, perc))
        return maps, logmel, l0

    def extract(self, track_id: str, uri: str) -> TrackFeatures:
        s = self.settings
        for folder in orphaned_scratch():
            shutil.rmtree(folder, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-") as scratch:
            path = Path(scratch) / "samples.f32"
            samples = decode_to_file(uri, s.sample_rate, path)
            frames = 1 + samples // s.hop_length
            if frames < s.segment_frames:  # shorter than one segment: the whole-track rule applies
                return self.extractor.from_signal(track_id, read_samples(path, samples, 0, samples))
            starts = np.arange(0, frames - s.segment_frames + 1, s.segment_hop_frames)
            names = map_names(s)
            maps = {name: np.empty((len(starts), s.n_mels, s.segment_frames), np.float32) for name in names}
            stats = np.empty((len(starts), 6 * s.n_mfcc), np.float32)
            summary = np.empty((len(starts), 3))
            for first in range(0, len(starts), self.starts_per_block):
                block = starts[first : first + self.starts_per_block]
                rows = slice(first, first + len(block))
                f0, f1 = int(block[0]), int(block[-1]) + s.segment_frames
                block_maps, logmel, l0 = self.block_maps(path, samples, frames, f0, f1)
                for name in names:
                    maps[name][rows] = cut(block_maps[name], block - f0, s.segment_frames)
                stats[rows] = self.extractor.mfcc_statistics(logmel, block - l0)
                summary[rows] = segment_summary({name: maps[name][rows] for name in names}, stats[rows])
        release_free_heap()
        return TrackFeatures(track_id, maps, stats, (starts * s.hop_length / s.sample_rate).astype(np.float32), False,
                             samples / s.sample_rate, summary)
