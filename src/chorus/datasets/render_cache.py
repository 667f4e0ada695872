"""A per-user cache of rendered clips, so a fresh clone or a cleaned state directory does not
parse and synthesise the same music21 excerpts again (about 0.3 s of parsing per work and 40 ms
of synthesis per clip; the default demo and pretext corpora take about a minute on 2 cores).

A clip is named by everything that decides its samples: the work and its tune number, the
measures, the seconds, the mood profile and the instrument, the sample rate, the soundfont's
SHA-256, the versions of music21, pyfluidsynth and the FluidSynth library, and the source of the
rendering code (``code``). A work that fails to render is cached as its error, so the next corpus
skips it without parsing it again. Entries are FLAC files and text, never anything executable or
unpickled; the folder is private to its user (0700).
"""

from __future__ import annotations

import ctypes.util
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from chorus.datasets.render import Work
from chorus.io import atomic_path, file_sha256, write_text_atomic


@dataclass(frozen=True)
class RenderJob:
    """One rendering of a work: its mood, output file, length and instrument."""

    work: Work
    mood: str  # the rendering's tempo, loudness and register (and instrument unless ``program``)
    out: str
    seconds: float
    measures: int
    program: int | None = None


def default_render_cache() -> Path:
    """``$XDG_CACHE_HOME/chorus/renders`` (``~/.cache/chorus/renders`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "chorus" / "renders"


def _fluidsynth_library() -> str:
    """The FluidSynth library's versioned file name (its version decides the synthesis)."""
    name = ctypes.util.find_library("fluidsynth") or "libfluidsynth"
    for folder in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib", "/usr/local/lib"):
        candidate = Path(folder) / name
        if candidate.exists():
            return candidate.resolve().name
    return name


class RenderCache:
    """Rendered clips by what decides their samples; see the module's docstring."""

    def __init__(self, root: Path, soundfont: Path, sample_rate: int, code: str) -> None:
        self.root = Path(root)
        self._base = {"soundfont_sha256": file_sha256(soundfont), "sample_rate": sample_rate, "code": code,
                      "music21": version("music21"), "pyfluidsynth": version("pyfluidsynth"),
                      "fluidsynth": _fluidsynth_library()}

    def key(self, job: RenderJob) -> str:
        clip = {**self._base, "work": job.work.label, "number": job.work.number, "measures": job.measures,
                "seconds": job.seconds, "mood": job.mood, "program": job.program}
        return hashlib.sha256(json.dumps(clip, sort_keys=True).encode()).hexdigest()

    def _entry(self, job: RenderJob) -> Path:
        key = self.key(job)
        return self.root / key[:2] / key

    def fetch(self, job: RenderJob) -> tuple[bool, str | None]:
        """(found, error): a cached clip is copied to ``job.out``; a cached failure is its error."""
        entry = self._entry(job)
        audio, error = entry.with_suffix(".flac"), entry.with_suffix(".error")
        if audio.exists():
            Path(job.out).parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(job.out) as tmp:
                shutil.copyfile(audio, tmp)
            return True, None
        if error.exists():
            return True, error.read_text()
        return False, None

    def store(self, job: RenderJob, error: str | None) -> None:
        """Keep a rendered clip (``job.out``) or the error its rendering ended with."""
        entry = self._entry(job)
        entry.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root.chmod(0o700)
        if error is not None:
            write_text_atomic(entry.with_suffix(".error"), error)
            return
        with atomic_path(entry.with_suffix(".flac")) as tmp:
            shutil.copyfile(job.out, tmp)
