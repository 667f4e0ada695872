"""Adapters turn a dataset's own layout into candidate rows: uri, root, source, labels, split.

- ``demo``: the demo manifest (``manifest.csv`` beside ``demo.json``).
- ``folder``: folder-per-label (GTZAN layout ``root/<label>/<file>``), label column ``label``.
- ``manifest``: a CSV or Parquet file with a ``uri`` column and optional label/split columns;
  relative paths resolve against the manifest's folder.
- ``mtat``, ``jamendo``, ``gtzan``: standard datasets in their own layouts (chorus.datasets.standard).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from chorus.config import IngestSettings
from chorus.datasets import standard
from chorus.datasets.candidates import (
    AUDIO_SUFFIXES,
    DEMO_STAMP,
    AudioCandidates,
    read_manifest_table,
)
from chorus.errors import InputError

__all__ = ["AUDIO_SUFFIXES", "DATASETS", "AudioCandidates", "candidates_for", "from_folder", "from_manifest",
           "read_manifest_table"]

def from_manifest(path: Path, source: str = "manifest") -> AudioCandidates:
    table = read_manifest_table(path)
    if "uri" not in table.columns:
        raise InputError(str(path), "manifest needs a 'uri' column", f"columns: {list(table.columns)}")
    table = table.copy()
    table["manifest_row"] = range(2, len(table) + 2)  # 1-based, after the header line
    return AudioCandidates(table, path.parent.resolve(), source, path)


def from_folder(root: Path) -> AudioCandidates:
    rows = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(label_dir.rglob("*")):
            # anything named like audio, and every link, is a candidate: what is not a usable
            # file gets a quarantine row with its reason rather than silence
            if not file.name.startswith(".") and (file.is_file() or file.is_symlink() or file.suffix.lower() in AUDIO_SUFFIXES):
                rows.append({"uri": str(file.relative_to(root)), "label": label_dir.name})
    if not rows:
        raise InputError(str(root), "folder-per-label layout expects root/<label>/<file>; found no files")
    return AudioCandidates(pd.DataFrame(rows), root.resolve(), "folder", None)


DATASETS = ("mtat", "jamendo", "gtzan")


def candidates_for(location: str | Path, adapter: str = "auto", settings: IngestSettings | None = None) -> AudioCandidates:
    """Pick the adapter by name or, with ``auto``, by what ``location`` is. ``settings``
    (IngestSettings) carries the standard datasets' options: split files, tags, category."""
    path = Path(location).expanduser()
    if not path.exists():
        raise InputError(str(path), "corpus location does not exist")
    if adapter in DATASETS:
        if not path.is_dir():
            raise InputError(str(path), f"the {adapter} adapter needs the dataset's root folder")
        s = settings or IngestSettings()
        if adapter == "mtat":
            return standard.from_mtat(path, s.top_tags, s.split_files)
        if adapter == "jamendo":
            return standard.from_jamendo(path, s.tag_category, s.jamendo_split, s.split_files)
        return standard.from_gtzan(path, s.split_files, s.split, s.split_seed)
    if adapter == "auto":
        if path.is_dir():
            adapter = "demo" if (path / DEMO_STAMP).exists() else "folder"
        else:
            adapter = "manifest"
    if adapter == "demo":
        return from_manifest(path / "manifest.csv" if path.is_dir() else path, source="demo")
    if adapter == "folder":
        if not path.is_dir():
            raise InputError(str(path), "the folder adapter needs a directory")
        return from_folder(path)
    if adapter == "manifest":
        if path.is_dir():
            raise InputError(str(path), "the manifest adapter needs a CSV/Parquet file, not a directory")
        return from_manifest(path)
    raise InputError(str(path), f"unknown adapter '{adapter}' (auto, demo, folder, manifest, mtat, jamendo, gtzan)")
