"""A track index of one model version: semantic vectors in a faiss float index (inner product of
unit vectors = cosine) and packed hash codes in a faiss binary index (Hamming). Small corpora get
exact flat indexes; large ones (``approximate``) binary IVF and IVF-flat."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from chorus.errors import InputError
from chorus.features import fixed_size_column, tensor_rows
from chorus.io import fsync_dir, fsync_file, write_json_atomic, write_parquet
from chorus.search.codes import pack_codes

Mode = Literal["hash", "semantic", "rerank"]
MODES: tuple[str, ...] = ("hash", "semantic", "rerank")


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row of (n, dims) scaled to unit length (a zero row stays zero), float32."""
    vectors = np.asarray(vectors, np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def mean_direction(vectors: np.ndarray) -> np.ndarray:
    """The unit mean of the unit rows of (n, dims): a track's embedding from its segments'
    vectors, each segment weighing alike; shape (dims,), float32."""
    return unit_rows(unit_rows(vectors).mean(axis=0, keepdims=True))[0]


def _ivf_lists(n: int, lists: int | None) -> int:
    return lists or max(1, int(np.sqrt(n)))


def _training_sample(n: int, lists: int, seed: int) -> np.ndarray:
    # k-means wants ~40-256 points per cell; more only slows training
    return np.sort(np.random.default_rng(seed).permutation(n)[: lists * 64])


def build_hash_index(packed: np.ndarray, approximate: bool = False, lists: int | None = None, probe: int = 32,
                     seed: int = 0) -> Any:
    """Exact ``IndexBinaryFlat`` or, when ``approximate``, ``IndexBinaryIVF`` (``lists`` k-means
    cells, default sqrt(n), ``probe`` of them visited per query) over packed codes."""
    import faiss

    bits = packed.shape[1] * 8
    packed = np.ascontiguousarray(packed, np.uint8)
    index: Any
    if not approximate:
        index = faiss.IndexBinaryFlat(bits)
    else:
        lists = _ivf_lists(len(packed), lists)
        index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(bits), bits, lists)
        index.train(packed[_training_sample(len(packed), lists, seed)])
        index.nprobe = probe
    index.add(packed)
    return index


def build_vector_index(vectors: np.ndarray, approximate: bool = False, lists: int | None = None, probe: int = 32,
                       seed: int = 0) -> Any:
    """Exact ``IndexFlatIP`` or, when ``approximate``, ``IndexIVFFlat`` (inner product) over unit
    vectors, so the similarity is the cosine."""
    import faiss

    unit = np.ascontiguousarray(unit_rows(vectors))
    index: Any
    if not approximate:
        index = faiss.IndexFlatIP(unit.shape[1])
    else:
        lists = _ivf_lists(len(unit), lists)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(unit.shape[1]), unit.shape[1], lists, faiss.METRIC_INNER_PRODUCT)
        index.train(unit[_training_sample(len(unit), lists, seed)])
        index.nprobe = probe
    index.add(unit)
    return index


def rerank(vectors: np.ndarray, queries: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """Each query's Hamming candidates re-ordered by cosine on the semantic vectors.

    Parameters
    ----------
    vectors : np.ndarray, shape (n, dims), unit rows; the index's vectors
    queries : np.ndarray, shape (q, dims), unit rows
    candidates : np.ndarray, shape (q, c), int; rows of ``vectors``, -1 for none
    k : int; neighbours kept per query

    Returns
    -------
    np.ndarray, shape (q, k), int64; best first, -1 pads
    """
    out = np.full((len(queries), k), -1, np.int64)
    for i, (query, ids) in enumerate(zip(queries, candidates, strict=True)):
        ids = ids[ids >= 0]
        order = np.argsort(-(vectors[ids] @ query), kind="stable")[:k]
        out[i, : len(order)] = ids[order]
    return out


def _version_folders(folder: Path) -> list[Path]:
    """Every version folder of an index, whole or not, oldest first."""
    def stamp(path: Path) -> int:
        return int(path.name.rsplit(".v", 1)[1])

    return sorted((p for p in folder.parent.glob(f".{folder.name}.v*") if p.is_dir()), key=stamp)


def _whole(version: Path) -> bool:
    return (version / "index.json").exists()  # written last by a save


def index_versions(folder: Path) -> list[Path]:
    """The whole version folders of an index (``index.json`` written), oldest first; the link
    ``folder`` names the current one."""
    return [p for p in _version_folders(folder) if _whole(p)]


def interrupted_saves(folder: Path) -> list[Path]:
    """Version folders a killed save left without ``index.json``. Saves and ``chorus gc`` hold
    the state directory's lock, so none of them is being written when either looks."""
    return [p for p in _version_folders(folder) if not _whole(p)]


def read_index_meta(folder: Path) -> dict[str, Any] | None:
    """``index.json`` of an index folder (written last, so present means complete), or None."""
    path = Path(folder) / "index.json"
    return json.loads(path.read_text()) if path.exists() else None


@dataclass
class SearchIndex:
    """Tracks (row i is faiss id i), their unit semantic vectors and packed codes, the two faiss
    indexes and the provenance (``meta``: model versions, feature-config hash, key)."""
    track_ids: np.ndarray
    vectors: np.ndarray  # (n, dims) float32, unit rows
    codes: np.ndarray  # (n, bits / 8) uint8
    meta: dict[str, Any]
    hash_index: Any = field(repr=False, default=None)
    vector_index: Any = field(repr=False, default=None)

    @classmethod
    def build(cls, track_ids: np.ndarray, vectors: np.ndarray, codes: np.ndarray, meta: dict[str, Any],
              approximate_above: int = 200_000, lists: int | None = None, probe: int = 32) -> SearchIndex:
        """An index of n tracks; exact up to ``approximate_above`` tracks, IVF beyond.

        Parameters
        ----------
        track_ids : np.ndarray, shape (n,)
        vectors : np.ndarray, shape (n, dims); any scale (they are normalised)
        codes : np.ndarray, shape (n, bits), +-1
        meta : recorded in ``index.json`` (models, key, ...)
        lists, probe : IVF cells and cells visited per query (approximate indexes)
        """
        if not (len(track_ids) == len(vectors) == len(codes)):
            raise ValueError(f"{len(track_ids)} tracks, {len(vectors)} vectors and {len(codes)} codes")
        approximate = len(track_ids) > approximate_above
        packed, unit = pack_codes(codes), unit_rows(vectors)
        meta = {**meta, "tracks": int(len(track_ids)), "bits": int(codes.shape[1]), "dims": int(unit.shape[1]),
                "hash_index": "IndexBinaryIVF" if approximate else "IndexBinaryFlat",
                "vector_index": "IndexIVFFlat" if approximate else "IndexFlatIP"}
        return cls(np.asarray(track_ids, dtype=object), unit, packed, meta,
                   build_hash_index(packed, approximate, lists, probe), build_vector_index(unit, approximate, lists, probe))

    def __len__(self) -> int:
        return len(self.track_ids)

    @property
    def bits(self) -> int:
        return int(self.codes.shape[1] * 8)

    def position(self, track_id: str) -> int | None:
        hits = np.flatnonzero(self.track_ids == track_id)
        return int(hits[0]) if len(hits) else None

    def search(self, vectors: np.ndarray, codes: np.ndarray, k: int = 10, mode: Mode = "rerank",
               rerank_candidates: int = 100, exclude: list[int | None] | None = None) -> pd.DataFrame:
        """Nearest tracks of each query.

        Parameters
        ----------
        vectors : np.ndarray, shape (q, dims); the queries' semantic vectors (normalised here)
        codes : np.ndarray, shape (q, bits // 8), uint8; the queries' packed codes
        k : int; neighbours per query
        mode : ``hash`` (Hamming), ``semantic`` (cosine) or ``rerank`` (Hamming candidates by cosine)
        rerank_candidates : int; Hamming candidates re-ranked per query
        exclude : an index position per query to leave out (the query track itself), or None

        Returns
        -------
        pd.DataFrame : one row per hit: query, rank, track_id, hamming, cosine (both distances
            reported whatever ranked them)
        """
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: one of {', '.join(MODES)}")
        queries, packed = unit_rows(vectors), np.ascontiguousarray(codes, np.uint8)
        fetch = min(k + (exclude is not None), len(self))
        if mode == "semantic":
            _, ids = self.vector_index.search(queries, fetch)
        else:
            _, ids = self.hash_index.search(packed, max(fetch, rerank_candidates) if mode == "rerank" else fetch)
            if mode == "rerank":
                ids = rerank(self.vectors, queries, ids, fetch)
        rows = []
        for q, hits in enumerate(ids):
            skip = exclude[q] if exclude is not None else None
            hits = [int(i) for i in hits if i >= 0 and i != skip][:k]
            hamming = np.bitwise_count(np.bitwise_xor(self.codes[hits], packed[q])).sum(axis=1)
            cosine = self.vectors[hits] @ queries[q]
            rows += [{"query": q, "rank": r + 1, "track_id": self.track_ids[i], "hamming": int(h), "cosine": float(c)}
                     for r, (i, h, c) in enumerate(zip(hits, hamming, cosine, strict=True))]
        return pd.DataFrame(rows, columns=["query", "rank", "track_id", "hamming", "cosine"])

    def search_tracks(self, track_ids: list[str], k: int = 10, mode: Mode = "rerank", rerank_candidates: int = 100) -> pd.DataFrame:
        """Tracks of the index as queries (each left out of its own results)."""
        positions = [self.position(t) for t in track_ids]
        missing = [t for t, p in zip(track_ids, positions, strict=True) if p is None]
        if missing:
            raise InputError(f"track {missing[0]}", "not in the index", f"index of {self.meta.get('name', '?')}: {len(self)} tracks")
        rows = np.asarray(positions)
        return self.search(self.vectors[rows], self.codes[rows], k, mode, rerank_candidates, exclude=list(positions))

    def checks(self) -> pd.DataFrame:
        """One row per track for the ``search_index`` expectation suite."""
        return pd.DataFrame({"track_id": self.track_ids.astype(str), "norm": np.linalg.norm(self.vectors, axis=1),
                             "finite": np.isfinite(self.vectors).all(axis=1), "code_bytes": self.codes.shape[1]})

    # --- storage ------------------------------------------------------------------------------

    def save(self, folder: Path) -> Path:
        """Write tracks.parquet, hash.faiss, semantic.faiss and index.json into a new version
        folder beside ``folder``, then point ``folder`` (a symbolic link) at it in one atomic
        rename: a reader sees the old index or the new one, never none and never half of one.
        The version before stays for readers that resolved it; older ones are removed."""
        import faiss

        folder = Path(folder)
        building = folder.with_name(f".{folder.name}.v{time.time_ns()}")
        building.mkdir(parents=True)
        table = pa.table({
            "track_id": pa.array(self.track_ids.tolist(), pa.string()),
            "vector": fixed_size_column([self.vectors], self.vectors.shape[1]),
            "code": pa.array([bytes(c) for c in self.codes], pa.binary(self.codes.shape[1])),
        })
        write_parquet(table, building / "tracks.parquet", meta=self.meta)
        faiss.write_index_binary(self.hash_index, str(building / "hash.faiss"))
        faiss.write_index(self.vector_index, str(building / "semantic.faiss"))
        write_json_atomic(building / "index.json", self.meta)  # written last: its presence marks a whole index
        for name in ("hash.faiss", "semantic.faiss"):
            fsync_file(building / name)
        if folder.exists() and not folder.is_symlink():  # an index from before versions: becomes one
            os.replace(folder, folder.with_name(f".{folder.name}.v0"))
            folder.symlink_to(f".{folder.name}.v0")
        link = folder.with_name(f".{folder.name}.link-{os.getpid()}")
        link.unlink(missing_ok=True)
        link.symlink_to(building.name)
        os.replace(link, folder)
        fsync_dir(folder.parent)
        for old in [*index_versions(folder)[:-2], *interrupted_saves(folder)]:
            shutil.rmtree(old, ignore_errors=True)
        return folder

    @classmethod
    def load(cls, folder: Path, attempts: int = 5) -> SearchIndex:
        """The current version of the index at ``folder``. A version removed while it is read (it
        was two rebuilds old by then) is read again at the version the link names now."""
        for attempt in range(attempts):
            version = Path(folder).resolve()  # one version for every file, even if a swap happens meanwhile
            try:
                return cls._load_version(version)
            except (OSError, RuntimeError, InputError):  # faiss reports a missing file as a RuntimeError
                # a version being removed may still exist, half gone (index.json first, or last):
                # what tells is whether the link has moved on (the current version is never removed)
                if Path(folder).resolve() == version or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def _load_version(cls, folder: Path) -> SearchIndex:
        import faiss

        meta = read_index_meta(folder)
        if meta is None:
            raise InputError(str(folder), "no search index here", "build one with `chorus index`")
        table = pq.read_table(folder / "tracks.parquet")
        codes = np.frombuffer(b"".join(table.column("code").to_pylist()), np.uint8).reshape(len(table), -1)
        return cls(np.asarray(table.column("track_id").to_pylist(), dtype=object), tensor_rows(table.column("vector")),
                   codes.copy(), meta, faiss.read_index_binary(str(folder / "hash.faiss")),
                   faiss.read_index(str(folder / "semantic.faiss")))
