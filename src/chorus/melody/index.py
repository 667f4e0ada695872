"""A melody index: windows of consecutive intervals and inter-onset ratios of every catalogue
melody, embedded as fixed vectors in a faiss index (the approximate stage), and a subsequence
alignment of the query against each shortlisted melody (the exact stage).

The approximate stage finds, for every window of the query, the nearest catalogue windows; a
track's vote is the sum over query windows of its best match's similarity. The exact stage is
the note alignment of ``chorus.melody.align``: key-free (pitch differences), tempo-free (spans
in median inter-onset units), tolerant of wrong notes (capped costs) and of missing and extra
notes on either side (skips)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chorus.config import MelodySettings
from chorus.io import atomic_path, write_json_atomic
from chorus.melody.align import align
from chorus.melody.line import Melody

INDEX_FILE, MELODIES_FILE, META_FILE = "melody.faiss", "melodies.parquet", "melody.json"


def window_vectors(melody: Melody, settings: MelodySettings) -> np.ndarray:
    """Every window of ``settings.window`` consecutive intervals and log inter-onset ratios,
    shape (n_windows, 2 * window) float32: intervals in semitones, ratios scaled by
    ``rhythm_weight`` x 4 (a doubling of a note's length weighs about what a third does) and
    centred per window (tempo-free within the window)."""
    intervals, ratios = melody.intervals(), melody.log_ioi_ratios()
    w = settings.window
    if len(intervals) < w:
        return np.zeros((0, 2 * w), np.float32)
    view = np.lib.stride_tricks.sliding_window_view
    rhythm = view(ratios, w)
    rhythm = rhythm - rhythm.mean(axis=1, keepdims=True)  # each window its own tempo: an excerpt's median is not the song's
    return np.hstack([view(intervals, w), settings.rhythm_weight * 4.0 * rhythm]).astype(np.float32)


def alignment(query: Melody, reference: Melody, settings: MelodySettings) -> tuple[float, int]:
    """``chorus.melody.align.align`` with the settings' caps, weights and skips."""
    return align(query, reference, settings.interval_cap, settings.rhythm_weight, settings.rhythm_cap,
                 settings.skip_cost, settings.max_skip)


@dataclass
class Match:
    track_id: str
    cost: float
    offset_s: float
    votes: float


class MelodyIndex:
    """Catalogue melodies (``track_id`` -> ``Melody``) and their window vectors in faiss."""

    def __init__(self, melodies: dict[str, Melody], settings: MelodySettings = MelodySettings(),
                 index: Any = None) -> None:
        self.settings = settings
        self.track_ids = sorted(melodies)
        self.melodies = melodies
        counts = [max(len(melodies[t]) - settings.window, 0) for t in self.track_ids]  # windows per melody
        self.owner = np.repeat(np.arange(len(self.track_ids), dtype=np.int64), counts)
        self.index = index if index is not None else self._build()
        if self.index.ntotal != len(self.owner):
            raise ValueError(f"the faiss index holds {self.index.ntotal} windows, the melodies {len(self.owner)}")

    def _build(self) -> Any:
        """Exact (flat) below ``settings.approximate_above`` windows, else an inverted file of
        4 sqrt(n) cells visited ``settings.ivf_probe`` at a time."""
        import faiss

        width = 2 * self.settings.window
        vectors = [window_vectors(self.melodies[t], self.settings) for t in self.track_ids]
        data = np.vstack(vectors) if vectors else np.zeros((0, width), np.float32)
        index: Any
        if len(data) <= self.settings.approximate_above:
            index = faiss.IndexFlatL2(width)
        else:
            cells = int(4 * np.sqrt(len(data)))
            index = faiss.IndexIVFFlat(faiss.IndexFlatL2(width), width, cells)
            sample = np.random.default_rng(0).choice(len(data), min(len(data), 64 * cells), replace=False)
            index.train(data[np.sort(sample)])
            index.nprobe = self.settings.ivf_probe
        index.add(data)
        return index

    def __len__(self) -> int:
        return len(self.track_ids)

    def shortlist(self, query: Melody, size: int | None = None) -> list[tuple[int, float]]:
        """Tracks by summed best window similarity, best first: (position, votes)."""
        vectors = window_vectors(query, self.settings)
        if len(vectors) == 0 or self.index.ntotal == 0:
            return [(i, 0.0) for i in range(min(size or self.settings.shortlist, len(self.track_ids)))]
        k = min(self.settings.neighbours, self.index.ntotal)
        distances, found = self.index.search(vectors, k)
        scale = 2.0 * self.settings.window  # a squared distance of one semitone per interval halves a vote
        votes: dict[int, np.ndarray] = {}
        for row in range(len(vectors)):
            valid = found[row] >= 0
            owners = self.owner[found[row][valid]]
            similarity = np.exp(-distances[row][valid] / scale)
            best: dict[int, float] = {}
            for owner, sim in zip(owners.tolist(), similarity.tolist(), strict=True):
                if sim > best.get(owner, 0.0):
                    best[owner] = sim
            for owner, sim in best.items():
                votes.setdefault(owner, np.zeros(len(vectors)))[row] = sim
        ranked = sorted(((owner, float(v.sum())) for owner, v in votes.items()), key=lambda x: -x[1])
        return ranked[: size or self.settings.shortlist]

    def search(self, query: Melody, k: int = 10, exhaustive: bool = False) -> list[Match]:
        """The ``k`` catalogue tracks whose melody best contains ``query``, by alignment cost
        (lowest first), each with the time in its melody where the query starts. ``exhaustive``
        (or a catalogue smaller than ``settings.exhaustive_below``) aligns against every track
        instead of the shortlist."""
        exhaustive = exhaustive or len(self.track_ids) < self.settings.exhaustive_below
        candidates = [(i, 0.0) for i in range(len(self.track_ids))] if exhaustive else self.shortlist(query)
        matches = []
        for position, votes in candidates:
            track = self.track_ids[position]
            reference = self.melodies[track]
            cost, start = alignment(query, reference, self.settings)
            onset = float(reference.onset_s[min(start, len(reference) - 1)]) if len(reference) else 0.0
            matches.append(Match(track, cost, onset, votes))
        matches.sort(key=lambda m: (m.cost, -m.votes, m.track_id))
        return matches[:k]

    def save(self, folder: Path, meta: dict[str, Any]) -> None:
        """The melodies as Parquet and the window vectors as a faiss index file (no pickle)."""
        import faiss

        folder.mkdir(parents=True, exist_ok=True)
        write_melodies(folder / MELODIES_FILE, self.melodies)
        with atomic_path(folder / INDEX_FILE) as tmp:
            faiss.write_index(self.index, str(tmp))
        write_json_atomic(folder / META_FILE, {**meta, "settings": self.settings.model_dump(mode="json"),
                                               "tracks": len(self.track_ids)})

    @classmethod
    def load(cls, folder: Path) -> MelodyIndex:
        """The index ``save`` wrote: melodies from Parquet, windows from the faiss file."""
        import faiss

        meta = json.loads((folder / META_FILE).read_text())
        return cls(read_melodies(folder / MELODIES_FILE), MelodySettings.model_validate(meta["settings"]),
                   faiss.read_index(str(folder / INDEX_FILE)))


def melodies_table(melodies: dict[str, Melody]) -> pd.DataFrame:
    """One row per note: track_id, note (position), onset_s, offset_s, pitch."""
    frames = [pd.DataFrame({"track_id": track, "note": np.arange(len(m)), "onset_s": m.onset_s,
                            "offset_s": m.onset_s + m.duration_s, "pitch": m.pitch}) for track, m in sorted(melodies.items())]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["track_id", "note", "onset_s", "offset_s", "pitch"])


def melodies_from_table(table: pd.DataFrame) -> dict[str, Melody]:
    """``Melody`` per track of a note table (track_id, note, onset_s, offset_s, pitch)."""
    return {str(track): Melody.from_notes(g) for track, g in table.sort_values(["track_id", "note"]).groupby("track_id", sort=True)}


def write_melodies(path: Path, melodies: dict[str, Melody]) -> None:
    with atomic_path(path) as tmp:
        melodies_table(melodies).to_parquet(tmp, index=False)


def read_melodies(path: Path) -> dict[str, Melody]:
    return melodies_from_table(pd.read_parquet(path))
