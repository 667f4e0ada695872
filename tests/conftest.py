"""Shared fixtures. Telemetry is off and Prefect's home is private before anything imports it."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


def _scratch(prefix: str) -> str:
    """A folder for this process's share of the suite, removed when the process exits."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


_HOME = _scratch("chorus-test-prefect-")
os.environ.update(
    {
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "GX_ANALYTICS_ENABLED": "false",
        "PREFECT_HOME": _HOME,
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    }
)
# `make test-fp32`: the suite as a CPU without bf16 units runs it, on any machine
_TRAIN_PRECISION = os.environ.get("CHORUS_TEST_TRAIN_PRECISION")
for key in list(os.environ):  # the developer's own CHORUS_* settings must not leak into tests
    if key.startswith("CHORUS_"):
        del os.environ[key]
if _TRAIN_PRECISION:
    os.environ["CHORUS_TRAIN__PRECISION"] = _TRAIN_PRECISION
# the suite's caches (rendered clips) are shared by its tests, never the user's
os.environ["XDG_CACHE_HOME"] = _scratch("chorus-test-cache-")

# tests train and embed in their own processes, as `chorus` does: the same heap settings
from chorus.compute import tune_process_allocator  # noqa: E402

tune_process_allocator()

SR = 22050


def tone(seconds: float = 4.0, freq: float = 440.0, amp: float = 0.3, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_wav(path: Path, y: np.ndarray, sr: int = SR, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), y, sr, subtype=subtype)
    return path


def run_chorus(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The ``chorus`` command in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "chorus_ops", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


def bench_figures(name: str, tmp_path: Path, timeout: float) -> dict:
    """``chorus bench <name> --quick --json`` in its own state directory: its last line, parsed."""
    done = run_chorus("--state-dir", str(tmp_path / "state"), "bench", name, "--quick", "--json",
                      cwd=tmp_path, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    from chorus_flows._common import without_run_heartbeats

    # the harness's server lives as long as the session: no crashed run to detect
    with prefect_test_harness(server_startup_timeout=90), without_run_heartbeats():
        yield


TINY_DEMO = {
    "styles": ["bach", "essenFolksong"],
    "tracks_per_style": 6,
    "clip_seconds": 5.0,
    "measures": 6,
    "users": 24,
    "communities": 2,
    "workers": 2,
}


# The longest modules first: `make test` runs the suite on two workers, a module per worker at a
# time (pytest -n 2 --dist loadfile), and a long module started last would run alone at the end.
LONGEST_FIRST = ("test_services.py", "test_bench_scale.py", "test_pipeline_flow.py", "test_search_demo.py",
                 "test_bench_features.py", "test_bench_transfer.py", "test_datasets_flow.py", "test_outage.py",
                 "test_features.py", "test_orchestration.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: n for n, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


# (suffix, codec, container format, sample rate): what FFmpeg (PyAV's wheel) encodes at test time
ENCODINGS = {".m4a": ("aac", "ipod", 22050), ".opus": ("libopus", "ogg", 48000), ".mp3": ("libmp3lame", "mp3", 22050),
             ".flac": ("flac", "flac", 22050), ".ogg": ("libopus", "ogg", 48000), ".wav": ("pcm_s16le", "wav", 22050)}


def write_encoded(path: Path, y: np.ndarray, sr: int = SR) -> Path:
    """``y`` (mono float) encoded by FFmpeg in the format of ``path``'s suffix (see ENCODINGS),
    resampled to the codec's rate where it needs one (Opus: 48 kHz)."""
    import av

    codec, container_format, rate = ENCODINGS[path.suffix.lower()]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=container_format) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(y.astype(np.float32).reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = sr
        resampler = av.AudioResampler(format=stream.codec_context.codec.audio_formats[0].name, layout="mono", rate=rate)
        for resampled in [*resampler.resample(frame), *resampler.resample(None)]:
            out.mux(stream.encode(resampled))
        out.mux(stream.encode(None))
    return path
