"""Tiny copies of MagnaTagATune, MTG-Jamendo and GTZAN in their exact layouts, with real audio
(a few seconds of tones and noise per clip, so genres/tags are audible) and planted bad rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

SR = 22050
MTAT_TAGS = ["guitar", "classical", "slow", "techno", "piano", "loud"]


def clip(seed: int, kind: int, seconds: float = 4.0) -> np.ndarray:
    """Audio whose character follows ``kind`` (pitch, brightness, noise), varied by ``seed``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    base = 110.0 * 2 ** (kind * 5 / 12)
    y = sum(np.sin(2 * np.pi * base * h * t + rng.uniform(0, 6)) / h for h in (1, 2, 3))
    y = y * (0.5 + 0.5 * np.sin(2 * np.pi * (1 + kind) * t) ** 2) + (0.05 * kind) * rng.standard_normal(len(t))
    return (0.2 * y / np.abs(y).max()).astype(np.float32)


def write(path: Path, y: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "MP3" if path.suffix == ".mp3" else None
    sf.write(str(path), y, SR, format=fmt) if fmt else sf.write(str(path), y, SR)
    return path


def make_mtat(root: Path, per_folder: int = 3) -> Path:
    """annotations_final.csv (tab-separated) + mp3 tree over folders 0, a (train), c (valid), d
    (test); tags follow the clip's kind; one zero-byte clip and one row with a tag value of 2."""
    folders = ["0", "a", "c", "d"]
    header = ["clip_id", *MTAT_TAGS, "mp3_path"]
    lines = ["\t".join(header)]
    clip_id = 0
    for folder in folders:
        for i in range(per_folder):
            kind = (clip_id % 2) * 3
            path = f"{folder}/artist{clip_id}-track-{i}.mp3"
            write(root / path, clip(clip_id, kind))
            tags = {"guitar": kind == 0, "classical": kind == 0, "slow": kind == 0, "techno": kind == 3,
                    "loud": kind == 3, "piano": clip_id == 0}
            lines.append("\t".join([str(clip_id), *("1" if tags[t] else "0" for t in MTAT_TAGS), path]))
            clip_id += 1
    (root / "d").mkdir(parents=True, exist_ok=True)
    (root / "d" / "broken-empty.mp3").write_bytes(b"")  # MagnaTagATune ships a few of these
    lines.append("\t".join([str(clip_id), *["0"] * len(MTAT_TAGS), "d/broken-empty.mp3"]))
    lines.append("\t".join([str(clip_id + 1), "2", *["0"] * (len(MTAT_TAGS) - 1), "d/bad-value.mp3"]))
    (root / "annotations_final.csv").write_text("\n".join(lines) + "\n")
    return root


JAMENDO_HEADER = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"


def make_jamendo(root: Path, per_split: int = 4) -> Path:
    """data/autotagging.tsv (variable tag fields), data/splits/split-0/autotagging-*.tsv, audio
    under audio/NN/<id>.mp3; mood/theme tags follow the clip's kind; three malformed lines."""
    rows, split_rows = [], {"train": [], "validation": [], "test": []}
    n = 0
    for split in split_rows:
        for _ in range(per_split):
            kind = (n % 2) * 3
            track, path = f"track_{1000 + n:07d}", f"{n % 100:02d}/{1000 + n}.mp3"
            write(root / "audio" / path, clip(100 + n, kind))
            tags = (["mood/theme---happy", "genre---pop", "instrument---synthesizer"] if kind == 3
                    else ["mood/theme---calm", "mood/theme---relaxing", "genre---classical", "instrument---guitar"])
            line = "\t".join([track, f"artist_{n:06d}", f"album_{n:06d}", path, "4.0", *tags])
            rows.append(line)
            split_rows[split].append(line)
            n += 1
    bad = ["track_0009001\tartist_1\talbum_1\t01/9001.mp3\t4.0",  # no tag
           "track_0009002\tartist_1\talbum_1\t01/9002.mp3\tlong\tmood/theme---happy",  # duration not a number
           "track_0009003\tartist_1\talbum_1\t01/9003.mp3\t4.0\thappy"]  # tag without its category
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "autotagging.tsv").write_text("\n".join([JAMENDO_HEADER, *rows, *bad]) + "\n")
    folder = data / "splits" / "split-0"
    folder.mkdir(parents=True, exist_ok=True)
    for split, lines in split_rows.items():
        (folder / f"autotagging-{split}.tsv").write_text("\n".join([JAMENDO_HEADER, *lines]) + "\n")
    return root


GTZAN_GENRES = ["blues", "classical", "metal"]


def make_gtzan(root: Path, per_genre: int = 5) -> Path:
    """genres/<genre>/<genre>.0000N.wav, and a stray file outside any genre folder."""
    for g, genre in enumerate(GTZAN_GENRES):
        for i in range(per_genre):
            write(root / "genres" / genre / f"{genre}.{i:05d}.wav", clip(200 + 10 * g + i, g * 2))
    write(root / "genres" / "blues" / "extra" / "stray.wav", clip(999, 0))
    return root
