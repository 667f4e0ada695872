"""Decoding audio: probe, decode to mono float32, resample with soxr."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

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
        reason = "unreadable" if head.startswith(_AUDIO_MAGIC) else "not_audio"
        raise AudioProblem(reason, str(exc).split(": ", 1)[-1]) from None
    declared = _wav_declared_data_bytes(path) if head[:4] == b"RIFF" and head[8:12] == b"WAVE" else None
    if declared is not None and declared[0] > declared[1]:
        raise AudioProblem(
            "truncated", f"header declares {declared[0]} data bytes, file holds {declared[1]}"
        )
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames),
                     f"{info.format}/{info.subtype}")


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
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
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
