"""Decoding audio: probe, decode to mono float32, resample with soxr.

libsndfile reads WAV, FLAC, Ogg (Vorbis, Opus), MP3 and AIFF; everything else FFmpeg reads (AAC and
ALAC in M4A/MP4, WMA, WebM, ...) is decoded with PyAV, whose wheel ships FFmpeg's libraries.
``AUDIO_SUFFIXES`` is the one list of file suffixes chorus treats as audio."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import soxr

AUDIO_SUFFIXES: tuple[str, ...] = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".m4a",
                                   ".mp4", ".aac", ".alac", ".wma", ".webm", ".mka", ".caf")

# File signatures of formats libsndfile reads: a file with one of these that fails to open is a
# broken audio file ("unreadable"); anything else is "not_audio".
_AUDIO_MAGIC: tuple[bytes, ...] = (b"RIFF", b"RIFX", b"RF64", b"fLaC", b"OggS", b"FORM", b"ID3", b"\xff\xfb",
                                  b"\xff\xf3", b"\xff\xf2", b"\xff\xfa")


# Containers whose header declares the exact number of frames (PCM, and FLAC's STREAMINFO total);
# elsewhere (Ogg granule positions, MP3 Xing/LAME counts) the count is an estimate.
EXACT_COUNT_CONTAINERS = frozenset({"WAV", "WAVEX", "RF64", "W64", "AIFF", "AU", "CAF", "NIST", "IRCAM", "VOC", "SD2",
                                    "FLAC"})
ESTIMATE_TOLERANCE_SHARE = 0.005  # of the declared frames
ESTIMATE_TOLERANCE_S = 1.0


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    frames: int
    codec: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0

    @property
    def container(self) -> str:
        return self.codec.split("/", 1)[0]

    def frame_tolerance(self) -> int:
        """Frames a whole file may decode short of its header's count: none where the container
        declares an exact count, else 0.5% of the count or one second, whichever is larger
        (pre-skip, padding and encoder delay make compressed counts estimates)."""
        if self.container in EXACT_COUNT_CONTAINERS:
            return 0
        return max(int(self.frames * ESTIMATE_TOLERANCE_SHARE), int(self.sample_rate * ESTIMATE_TOLERANCE_S))


class AudioProblem(Exception):
    """A file cannot be used; ``reason`` is one of the quarantine reasons."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def probe(path: str | Path) -> AudioInfo:
    """Header facts of an audio file, or AudioProblem(empty / not_audio / unreadable / truncated)."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise AudioProblem("empty", "zero bytes")
    with open(path, "rb") as fh:
        head = fh.read(12)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        if not head.startswith(_AUDIO_MAGIC):
            return _probe_ffmpeg(path, head, str(exc).split(": ", 1)[-1])
        raise AudioProblem("unreadable", str(exc).split(": ", 1)[-1]) from None
    declared = _wav_declared_data_bytes(path) if head[:4] == b"RIFF" and head[8:12] == b"WAVE" else None
    if declared is not None and declared[0] > declared[1]:
        raise AudioProblem(
            "truncated", f"header declares {declared[0]} data bytes, file holds {declared[1]}"
        )
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames),
                     f"{info.format}/{info.subtype}")


def _probe_ffmpeg(path: Path, head: bytes, libsndfile_error: str) -> AudioInfo:
    """Header facts from FFmpeg (PyAV) for what libsndfile does not read. The frame count is the
    stream's (or the container's) duration, an estimate like MP3's."""
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioProblem("not_audio", f"{container.format.name}: no audio stream")
            stream = container.streams.audio[0]
            rate = int(stream.codec_context.sample_rate or stream.rate or 0)
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            else:
                seconds = (container.duration or 0) / av.time_base
            return AudioInfo(rate, int(stream.codec_context.channels or 1), int(round(seconds * rate)),
                             f"{container.format.name.split(',')[0].upper()}/{stream.codec_context.name}")
    except av.FFmpegError as exc:
        # an ISO media header (....ftyp) that FFmpeg cannot open is a broken audio file
        reason = "unreadable" if head[4:8] == b"ftyp" else "not_audio"
        raise AudioProblem(reason, f"{libsndfile_error}; FFmpeg: {exc.strerror or exc}") from None


def _decode_ffmpeg(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode the first audio stream with FFmpeg (PyAV) to float32, shape (frames, channels)."""
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            stream = container.streams.audio[0]
            channels = int(stream.codec_context.channels or 1)
            rate = int(stream.codec_context.sample_rate)
            # packed float32 at the stream's own rate and layout: one (1, frames * channels) array per frame
            resampler = av.AudioResampler(format="flt", layout=stream.codec_context.layout, rate=rate)
            chunks = [out.to_ndarray().reshape(-1) for frame in container.decode(stream) for out in resampler.resample(frame)]
            chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    except (av.FFmpegError, IndexError, ValueError) as exc:
        raise AudioProblem("truncated", f"decoding failed: {exc}") from None
    data = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return data.reshape(-1, channels).astype(np.float32, copy=False), rate


def _wav_declared_data_bytes(path: Path) -> tuple[int, int] | None:
    """(declared, present) size of a WAV's data chunk. libsndfile silently shortens a truncated
    WAV to what is present, so this reads the RIFF chunk table itself."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        fh.seek(12)
        while True:
            header = fh.read(8)
            if len(header) < 8:
                return None
            cid, csize = header[:4], struct.unpack("<I", header[4:])[0]
            if cid == b"data":
                if csize == 0xFFFFFFFF:  # streaming writers leave the size open
                    return None
                return csize, size - fh.tell()
            fh.seek(csize + (csize & 1), 1)


def decode(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode to float32, shape (frames, channels). Decoding errors become AudioProblem."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        if not head.startswith(_AUDIO_MAGIC):  # a format libsndfile does not read: FFmpeg's
            return _decode_ffmpeg(path)
        raise AudioProblem("truncated", f"decoding failed: {exc}") from None
    return data, int(rate)


def to_mono(data: np.ndarray) -> np.ndarray:
    return data.mean(axis=1, dtype=np.float32) if data.ndim == 2 else data.astype(np.float32)


def resample(y: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """soxr high quality: faster than scipy's polyphase at the same quality."""
    if rate == target_rate:
        return y
    return soxr.resample(y, rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def load_mono(path: str | Path, target_rate: int) -> np.ndarray:
    data, rate = decode(path)
    return resample(to_mono(data), rate, target_rate)
