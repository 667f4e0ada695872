"""The feature chain: one STFT per track -> log-mel, harmonic and percussive log-mel (HPSS) and MFCC
statistics, cut into fixed-length segments and stored as fixed-shape float32 in Parquet.

dB use a fixed reference (1.0) and a floor, never the per-segment maximum, so loudness survives
as a cue. One stored shape per feature set (n_mels x segment_frames); models crop or pool it.

HPSS is librosa's definition (median filters across time and frequency, soft masks) but the
median filters are bottleneck's moving median over the same symmetric-padded windows: identical
output (scipy's ``mode="reflect"`` is numpy's ``"symmetric"``), about ten times faster. HPSS is
90% of the obvious per-clip chain, so this is where the speed is.
"""


from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chorus.audio import AudioProblem, load_mono
from chorus.config import FeatureSettings

FEATURE_SCHEMA_VERSION = 2
DB_REFERENCE = 1.0
AMIN = 1e-10  # power floor before dB: -100 dB
DB_MAX = 160.0  # far above any real mel power (a full-scale sine is ~+60 dB); a guard against garbage
MAPS = ("logmel", "harmonic", "percussive")
MFCC_STATS = ("mfcc_mean", "mfcc_std", "delta_mean", "delta_std", "delta2_mean", "delta2_std")


def map_names(settings: FeatureSettings) -> tuple[str, ...]:
    return MAPS if settings.hpss else MAPS[:1]


@dataclass(frozen=True)
class TrackFeatures:
    track_id: str
    maps: dict[str, np.ndarray]  # name -> (segments, n_mels, segment_frames) float32
    mfcc_stats: np.ndarray  # (segments, 6 * n_mfcc) float32, in MFCC_STATS order
    starts_s: np.ndarray  # (segments,)
    padded: bool
    seconds: float  # audio duration analysed
    # per segment: all values finite (1/0), lowest and highest dB over the maps; computed where
    # the track is extracted, while its maps are in cache, for the shard's expectation suite
    checks: np.ndarray  # (segments, 3) float64

    @property
    def logmel(self) -> np.ndarray:
        return self.maps["logmel"]

    @property
    def segments(self) -> int:
        return int(self.logmel.shape[0])


def centered_moving_median(x: np.ndarray, window: int, axis: int) -> np.ndarray:
    """``scipy.ndimage.median_filter(x, size=window along axis, mode="reflect")``, by bottleneck's
    moving median over the symmetric-padded input (the same values, much faster).

    Parameters
    ----------
    x : np.ndarray, any shape, float32
    window : int > 0, odd; the median window along ``axis``
    axis : int

    Returns
    -------
    np.ndarray : same shape as ``x``
    """
    import bottleneck

    half = window // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (half, half)
    moved = bottleneck.move_median(np.pad(x, pad, mode="symmetric"), window, axis=axis)
    keep = [slice(None)] * x.ndim
    keep[axis] = slice(window - 1, window - 1 + x.shape[axis])
    return moved[tuple(keep)]


class FeatureExtractor:
    """The per-track chain for one feature configuration; filterbanks are built once."""

    def __init__(self, settings: FeatureSettings) -> None:
        import scipy.sparse

        self.settings = settings
        # Mel filters are mostly zeros: a sparse product is several times cheaper than dense.
        self.mel = scipy.sparse.csr_matrix(mel_filterbank(settings))

    def stft_magnitude(self, y: np.ndarray) -> np.ndarray:
        """|STFT| with librosa.stft itself: another FFT's float32 rounding moves near-silent mel
        bands of the percussive map by more than the reference chain's tolerance, and the STFT is
        a small part of the chain."""
        import librosa

        s = self.settings
        return np.abs(librosa.stft(y, n_fft=s.n_fft, hop_length=s.hop_length))

    def to_db(self, power: np.ndarray) -> np.ndarray:
        import librosa

        db = librosa.power_to_db(self.mel @ power, ref=DB_REFERENCE, amin=AMIN, top_db=None)
        return np.maximum(db, self.settings.db_floor).astype(np.float32, copy=False)

    def analyse(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """The maps of one mono signal, full length.

        Parameters
        ----------
        y : np.ndarray, shape (samples,), float32 at ``settings.sample_rate``

        Returns
        -------
        dict[str, np.ndarray] : ``logmel`` (and with ``hpss`` ``harmonic``, ``percussive``), each
            (n_mels, frames) float32 in dB re 1.0, floored at ``db_floor``
        """
        s = self.settings
        magnitude = self.stft_magnitude(y)
        maps = {"logmel": self.to_db(magnitude**2)}
        if s.hpss:
            harm = centered_moving_median(magnitude, s.hpss_kernel, axis=1)  # across time
            perc = centered_moving_median(magnitude, s.hpss_kernel, axis=0)  # across frequency
            maps["harmonic"], maps["percussive"] = (self.to_db(p) for p in hpss_powers(magnitude, harm, perc))
        return maps

    def mfcc_statistics(self, logmel: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """MFCC (DCT-II of the log-mel, as librosa.feature.mfcc) + deltas; mean/std per segment."""
        import librosa

        s = self.settings
        mfcc = librosa.feature.mfcc(S=logmel, n_mfcc=s.n_mfcc)
        d1 = librosa.feature.delta(mfcc, order=1)
        d2 = librosa.feature.delta(mfcc, order=2)
        rows = []
        for start in starts:
            window = slice(int(start), int(start) + s.segment_frames)
            parts = [(m[:, window].mean(axis=1), m[:, window].std(axis=1)) for m in (mfcc, d1, d2)]
            rows.append(np.concatenate([p for pair in parts for p in pair]))
        return np.asarray(rows, np.float32).reshape(len(starts), 6 * s.n_mfcc)

    def describe(self) -> dict[str, str]:
        """Which chain made the maps, for a shard's metadata."""
        return {"backend": "numpy"}

    def analyse_batch(self, ys: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """``analyse`` of several signals (a device extractor does them in one call)."""
        return [self.analyse(y) for y in ys]

    def from_signal(self, track_id: str, y: np.ndarray) -> TrackFeatures:
        return self.from_maps(track_id, self.analyse(y), len(y))

    def from_maps(self, track_id: str, maps: dict[str, np.ndarray], samples: int) -> TrackFeatures:
        """Segments and MFCC statistics of a track's full-length maps."""
        s = self.settings
        frames = maps["logmel"].shape[1]
        padded = frames < s.segment_frames
        if padded:
            if s.short_track == "reject":
                seconds = samples / s.sample_rate
                raise AudioProblem("too_short_for_segment",
                                   f"{seconds:.2f} s < one segment of {segment_seconds(s):.2f} s (features.short_track=reject)")
            maps = {k: pad_frames(v, s.segment_frames, s.db_floor) for k, v in maps.items()}
        starts = segment_starts(maps["logmel"].shape[1], s)
        segments = {k: cut(v, starts, s.segment_frames) for k, v in maps.items()}
        mfcc_stats = self.mfcc_statistics(maps["logmel"], starts)
        return TrackFeatures(
            track_id,
            segments,
            mfcc_stats,
            (starts * s.hop_length / s.sample_rate).astype(np.float32),
            padded,
            samples / s.sample_rate,
            segment_summary(segments, mfcc_stats),
        )

    def decode(self, uri: str) -> np.ndarray:
        """Decode -> mono -> resample (soxr) to the analysis rate; non-finite samples are a problem."""
        y = load_mono(uri, self.settings.sample_rate)
        if not np.isfinite(y).all():
            raise AudioProblem("non_finite_samples", f"{int((~np.isfinite(y)).sum())} NaN/inf samples after decoding")
        return y

    def extract(self, track_id: str, uri: str) -> TrackFeatures:
        """Decode -> one STFT -> maps -> segments, for one file."""
        return self.from_signal(track_id, self.decode(uri))

    def extract_batch(self, track_ids: list[str], uris: list[str]) -> list[TrackFeatures | dict[str, str]]:
        """Several files, their maps in one ``analyse_batch`` call; a file that fails comes back as
        a problem record (as ``extract_track_or_problem``) and the others go on."""
        results: list[TrackFeatures | dict[str, str] | None] = []
        signals: dict[int, np.ndarray] = {}
        for n, (track_id, uri) in enumerate(zip(track_ids, uris, strict=True)):
            try:
                signals[n] = self.decode(uri)
                results.append(None)
            except AudioProblem as problem:
                results.append(problem_record(track_id, uri, problem))
        for n, maps in zip(signals, self.analyse_batch(list(signals.values())), strict=True):
            try:
                results[n] = self.from_maps(track_ids[n], maps, len(signals[n]))
            except AudioProblem as problem:
                results[n] = problem_record(track_ids[n], uris[n], problem)
        return [r for r in results if r is not None]


def segment_summary(maps: dict[str, np.ndarray], mfcc_stats: np.ndarray) -> np.ndarray:
    """(segments, 3): finite (1/0), min dB and max dB over every map of each segment."""
    finite = np.isfinite(mfcc_stats).all(axis=1)
    low = np.full(len(mfcc_stats), np.inf)
    high = np.full(len(mfcc_stats), -np.inf)
    for block in maps.values():
        rows = block.reshape(len(block), -1)
        finite &= np.isfinite(rows).all(axis=1)
        low = np.minimum(low, rows.min(axis=1, initial=np.inf))
        high = np.maximum(high, rows.max(axis=1, initial=-np.inf))
    return np.column_stack([finite, low, high]).astype(np.float64)


def hpss_powers(magnitude: np.ndarray, harm: np.ndarray, perc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Harmonic and percussive power spectra from librosa's soft masks (power 2, margin 1):
    mask_h = h^2 / (h^2 + p^2), zeros split evenly, in place in one pass. (librosa first divides
    by max(h, p) against overflow; audio magnitudes are nowhere near it.)

    Parameters
    ----------
    magnitude : np.ndarray, shape (1 + n_fft // 2, frames), float32; |STFT|
    harm, perc : np.ndarray, same shape; the median-filtered magnitudes, overwritten

    Returns
    -------
    (np.ndarray, np.ndarray) : harmonic and percussive power, each shaped like ``magnitude``
    """
    np.multiply(harm, harm, out=harm)
    np.multiply(perc, perc, out=perc)
    total = harm + perc
    empty = total <= np.finfo(np.float32).tiny
    total[empty], harm[empty], perc[empty] = 1.0, 0.5, 0.5
    # each mask from its own part: 1 - mask_h would cancel catastrophically where one part dominates
    np.divide(harm, total, out=harm)
    np.divide(perc, total, out=perc)
    power = magnitude * magnitude
    np.multiply(harm, harm, out=harm)
    np.multiply(harm, power, out=harm)
    np.multiply(perc, perc, out=perc)
    np.multiply(perc, power, out=perc)
    return harm, perc


def mel_filterbank(settings: FeatureSettings) -> np.ndarray:
    """librosa's mel filterbank, shape (n_mels, 1 + n_fft // 2), float32."""
    import librosa

    return librosa.filters.mel(
        sr=settings.sample_rate, n_fft=settings.n_fft, n_mels=settings.n_mels,
        fmin=settings.fmin, fmax=settings.fmax,
    ).astype(np.float32)


def segment_seconds(settings: FeatureSettings) -> float:
    return settings.segment_frames * settings.hop_length / settings.sample_rate


def logmel(y: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """Log-power mel of a signal.

    Parameters
    ----------
    y : np.ndarray, shape (samples,), float32 at ``settings.sample_rate``

    Returns
    -------
    np.ndarray, shape (n_mels, frames), float32 : dB re 1.0, floored at ``db_floor``
    """
    extractor = FeatureExtractor(settings)
    return extractor.to_db(extractor.stft_magnitude(y) ** 2)


def pad_frames(spec: np.ndarray, width: int, floor: float) -> np.ndarray:
    return np.pad(spec, ((0, 0), (0, width - spec.shape[1])), constant_values=floor)


def segment_starts(frames: int, settings: FeatureSettings) -> np.ndarray:
    """First frame of each whole segment (segment_frames wide, segment_hop_frames apart)."""
    return np.arange(1 + (frames - settings.segment_frames) // settings.segment_hop_frames) * settings.segment_hop_frames


def cut(spec: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    return np.stack([spec[:, s : s + width] for s in starts]).astype(np.float32, copy=False)


def segment(spec: np.ndarray, settings: FeatureSettings) -> tuple[np.ndarray, np.ndarray, bool]:
    """Fixed-length segments of a map; a map shorter than one segment is padded with the floor or
    rejected (``short_track``).

    Parameters
    ----------
    spec : np.ndarray, shape (n_mels, frames)

    Returns
    -------
    segments : np.ndarray, shape (n, n_mels, segment_frames), float32
    starts_s : np.ndarray, shape (n,); each segment's start in seconds
    padded : bool; whether the map was shorter than one segment
    """
    padded = spec.shape[1] < settings.segment_frames
    if padded:
        if settings.short_track == "reject":
            seconds = spec.shape[1] * settings.hop_length / settings.sample_rate
            raise AudioProblem("too_short_for_segment", f"{seconds:.2f} s < one segment (features.short_track=reject)")
        spec = pad_frames(spec, settings.segment_frames, settings.db_floor)
    starts = segment_starts(spec.shape[1], settings)
    return cut(spec, starts, settings.segment_frames), starts * settings.hop_length / settings.sample_rate, padded


def problem_record(track_id: str, uri: str, problem: AudioProblem) -> dict[str, str]:
    return {"track_id": track_id, "uri": uri, "reason": problem.reason, "detail": problem.detail}
