"""Notes from audio with basic-pitch's pretrained note model (Bittner et al., "A Lightweight
Instrument-Agnostic Model for Polyphonic Note Transcription and Multipitch Estimation", ICASSP
2022; Apache-2.0). The ONNX graph is read out of the pinned basic-pitch wheel (never installed:
its metadata requires TensorFlow) and run with onnxruntime; an ONNX file is a protobuf graph, so
loading it runs no code from it. ``notes_from_posteriors`` follows basic-pitch's own note
decoding (``note_creation.output_to_notes_polyphonic`` without its "melodia trick"), with its
default thresholds."""

from __future__ import annotations

import hashlib
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.signal

from chorus.errors import InputError
from chorus.pretrained.weights import WheelPin, wheel_path

BASIC_PITCH_WHEEL = WheelPin("basic-pitch", "0.4.0", "738adb503aae7fdfc7d1e1511aa0ce35052315f260a19531ef4c356708425db0",
                             "Apache-2.0", tag="py2.py3-none-any")
MODEL_MEMBER = "basic_pitch/saved_models/icassp_2022/nmp.onnx"
MODEL_SHA256 = "2c3c1d144bfa61ad236e92e169c13535c880469a12a047d4e73451f2c059a0ec"  # nmp.onnx inside the pinned wheel
SAMPLE_RATE = 22050
FFT_HOP = 256
WINDOW_SAMPLES = SAMPLE_RATE * 2 - FFT_HOP  # the model's input: 2 s less one hop
OVERLAP_FRAMES = 30
FRAMES_PER_WINDOW = 172
MIDI_OFFSET = 21  # the lowest of the 88 piano keys the model's bins cover
NOTE_COLUMNS = ["onset_s", "offset_s", "pitch", "amplitude"]
TRANSCRIBER_VERSION = f"basic-pitch-{BASIC_PITCH_WHEEL.version}-onnx/notes-1"


@dataclass(frozen=True)
class NoteThresholds:
    """basic-pitch's defaults: an onset peak of at least ``onset`` starts a note, which lasts while
    its frame activation stays above ``frame``; notes of ``min_frames`` or fewer are dropped."""

    onset: float = 0.5
    frame: float = 0.3
    min_frames: int = 11  # 127.7 ms at 86.1 frames per second
    energy_tolerance: int = 11


def _model_bytes(wheel_dir: Path | None = None) -> bytes:
    path = wheel_path(wheel_dir, BASIC_PITCH_WHEEL)
    with zipfile.ZipFile(path) as archive:
        model = archive.read(MODEL_MEMBER)
    if hashlib.sha256(model).hexdigest() != MODEL_SHA256:
        raise InputError(f"{path}!{MODEL_MEMBER}", f"SHA-256 is not the pinned {MODEL_SHA256}", "delete the wheel and run `make setup`")
    return model


class NoteTranscriber:
    """basic-pitch's note model, loaded once per process from the pinned wheel.

    Examples
    --------
    >>> transcriber = NoteTranscriber.shared()  # doctest: +SKIP
    >>> notes = transcriber.notes(audio)  # audio: (samples,) float32 at 22,050 Hz  # doctest: +SKIP
    >>> list(notes.columns)  # doctest: +SKIP
    ['onset_s', 'offset_s', 'pitch', 'amplitude']
    """

    _shared: NoteTranscriber | None = None
    _lock = threading.Lock()

    def __init__(self, model: bytes, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.model_sha256 = hashlib.sha256(model).hexdigest()
        self.session: Any = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    @classmethod
    def shared(cls, wheel_dir: Path | None = None) -> NoteTranscriber:
        with cls._lock:
            if cls._shared is None:
                cls._shared = cls(_model_bytes(wheel_dir))
            return cls._shared

    def posteriors(self, audio: np.ndarray) -> dict[str, np.ndarray]:
        """The model's frame-level outputs for mono ``audio`` at 22,050 Hz, shape (samples,):
        ``note`` and ``onset`` (frames, 88) and ``contour`` (frames, 264), at 86.1 frames per
        second, windowed and stitched as basic-pitch does."""
        overlap = OVERLAP_FRAMES * FFT_HOP
        hop = WINDOW_SAMPLES - overlap
        padded = np.concatenate([np.zeros(overlap // 2, np.float32), np.asarray(audio, np.float32)])
        starts = range(0, max(len(padded), 1), hop)
        windows = np.zeros((len(starts), WINDOW_SAMPLES, 1), np.float32)
        for i, start in enumerate(starts):
            chunk = padded[start:start + WINDOW_SAMPLES]
            windows[i, : len(chunk), 0] = chunk
        names = ["StatefulPartitionedCall:1", "StatefulPartitionedCall:2", "StatefulPartitionedCall:0"]
        note, onset, contour = self.session.run(names, {"serving_default_input_2:0": windows})
        n_frames = int(np.floor(len(audio) * (SAMPLE_RATE / FFT_HOP) / SAMPLE_RATE))
        half = OVERLAP_FRAMES // 2
        return {name: out[:, half:-half, :].reshape(-1, out.shape[2])[:n_frames]
                for name, out in (("note", note), ("onset", onset), ("contour", contour))}

    def notes(self, audio: np.ndarray, thresholds: NoteThresholds = NoteThresholds()) -> pd.DataFrame:
        """Note events of mono ``audio`` at 22,050 Hz: onset and offset (s), MIDI pitch, mean
        activation, sorted by onset then pitch."""
        out = self.posteriors(audio)
        return notes_from_posteriors(out["note"], out["onset"], thresholds)


def frame_times(n_frames: int) -> np.ndarray:
    """Seconds of each output frame, corrected for the windows' overlap as basic-pitch does."""
    original = np.arange(n_frames) * FFT_HOP / SAMPLE_RATE
    window_numbers = np.floor(np.arange(n_frames) / FRAMES_PER_WINDOW)
    window_offset = (FFT_HOP / SAMPLE_RATE) * (FRAMES_PER_WINDOW - (WINDOW_SAMPLES / FFT_HOP)) + 0.0018
    return original - window_offset * window_numbers


def _inferred_onsets(onsets: np.ndarray, frames: np.ndarray, n_diff: int = 2) -> np.ndarray:
    """Onsets where the frame activation jumps, beside the predicted ones (their maximum)."""
    diffs = []
    for n in range(1, n_diff + 1):
        shifted = np.concatenate([np.zeros((n, frames.shape[1])), frames])
        diffs.append(shifted[n:, :] - shifted[:-n, :])
    frame_diff = np.min(diffs, axis=0)
    frame_diff[frame_diff < 0] = 0
    frame_diff[:n_diff, :] = 0
    if frame_diff.max() > 0:
        frame_diff = onsets.max() * frame_diff / frame_diff.max()
    return np.maximum(onsets, frame_diff)


def notes_from_posteriors(frames: np.ndarray, onsets: np.ndarray,
                          thresholds: NoteThresholds = NoteThresholds()) -> pd.DataFrame:
    """Note events from the model's frame and onset activations, shapes (n_frames, 88): each
    onset peak above ``thresholds.onset`` (latest first) starts a note at its pitch that lasts
    until the frame activation stays below ``thresholds.frame`` for ``energy_tolerance`` frames;
    a note's frames (and its neighbouring semitones') are then used up."""
    n_frames = frames.shape[0]
    columns: dict[str, list[float]] = {c: [] for c in NOTE_COLUMNS}
    if n_frames < 2:
        return pd.DataFrame(columns).astype({"pitch": "int16"})
    onsets = _inferred_onsets(onsets, frames)
    peaks = np.zeros(onsets.shape)
    where = scipy.signal.argrelmax(onsets, axis=0)
    peaks[where] = onsets[where]
    times, bins = np.where(peaks >= thresholds.onset)
    remaining = frames.copy()
    seconds = frame_times(n_frames + 1)
    for start, pitch_bin in zip(times[::-1], bins[::-1], strict=True):
        if start >= n_frames - 1:
            continue
        i, below = start + 1, 0
        while i < n_frames - 1 and below < thresholds.energy_tolerance:
            below = below + 1 if remaining[i, pitch_bin] < thresholds.frame else 0
            i += 1
        end = i - below
        if end - start <= thresholds.min_frames:
            continue
        remaining[start:end, max(pitch_bin - 1, 0):pitch_bin + 2] = 0
        columns["onset_s"].append(float(seconds[start]))
        columns["offset_s"].append(float(seconds[end]))
        columns["pitch"].append(int(pitch_bin + MIDI_OFFSET))
        columns["amplitude"].append(float(frames[start:end, pitch_bin].mean()))
    notes = pd.DataFrame(columns).astype({"onset_s": "float64", "offset_s": "float64", "pitch": "int16",
                                          "amplitude": "float32"})
    return notes.sort_values(["onset_s", "pitch"], kind="stable").reset_index(drop=True)
