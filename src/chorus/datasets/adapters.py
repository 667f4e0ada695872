"""Adapters turn a dataset's own layout into candidate rows: uri, root, source, labels, split.

- ``demo``: the demo manifest (``manifest.csv`` beside ``demo.json``).
- ``folder``: every file under a root at any depth, labelled by a folder (``ingest.label_from``:
  ``top`` is GTZAN's ``root/<label>/<file>``; ``parent``, ``grandparent``, or ``none``), column ``label``.
- ``manifest``: a CSV or Parquet file with a ``uri`` column and optional label/split columns;
  relative paths resolve against the manifest's folder.
- ``mtat``, ``jamendo``, ``gtzan``: standard datasets in their own layouts (chorus.datasets.standard).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd

from chorus.audio import AUDIO_SUFFIXES
from chorus.config import IngestSettings
from chorus.datasets import standard
from chorus.datasets.candidates import (
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
        # the rule and the count, never the header itself: a file named by a run's caller is not echoed into logs
        raise InputError(str(path), "manifest needs a 'uri' column", f"its header has {len(table.columns)} columns, none named uri")
    table = table.copy()
    table["manifest_row"] = range(2, len(table) + 2)  # 1-based, after the header line
    return AudioCandidates(table, path.parent.resolve(), source, path)


LabelFrom = Literal["top", "parent", "grandparent", "none"]


def _folder_label(relative: Path, label_from: LabelFrom) -> str | None:
    """The label a file's place gives it (None: its place gives none)."""
    folders = relative.parts[:-1]
    if label_from == "top":
        return folders[0] if folders else None
    if label_from == "parent":
        return folders[-1] if folders else None
    return folders[-2] if len(folders) >= 2 else None  # grandparent


def from_folder(root: Path, label_from: LabelFrom = "top") -> AudioCandidates:
    """Every file under ``root``, at any depth, with its label from its folders (``label_from``:
    top, parent, grandparent, or none for an unlabelled library). A file whose place gives no
    label (e.g. directly in the root with label_from=top) is rejected with that reason, not skipped."""
    rows, rejected = [], []
    for file in sorted(root.rglob("*")):
        relative = file.relative_to(root)
        # anything named like audio, and every link, is a candidate: what is not a usable file gets
        # a quarantine row with its reason rather than silence; hidden files and folders are not ours
        if any(part.startswith(".") for part in relative.parts) or \
                not (file.is_file() or file.is_symlink() or file.suffix.lower() in AUDIO_SUFFIXES):
            continue
        if label_from == "none":
            rows.append({"uri": str(relative)})
            continue
        label = _folder_label(relative, label_from)
        if label is None:
            rejected.append({"uri": str(relative), "reason": "no_label",
                             "detail": f"ingest.label_from={label_from} takes the label from a folder this file is not in",
                             "manifest_row": None})
        else:
            rows.append({"uri": str(relative), "label": label})
    if not rows and not rejected:
        raise InputError(str(root), "no files found in the folder or below it")
    table = pd.DataFrame(rows, columns=["uri"] + ([] if label_from == "none" else ["label"]))
    return AudioCandidates(table, root.resolve(), "folder", None,
                           rejected=pd.DataFrame(rejected) if rejected else None)


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
        return from_folder(path, (settings or IngestSettings()).label_from)
    if adapter == "manifest":
        if path.is_dir():
            raise InputError(str(path), "the manifest adapter needs a CSV/Parquet file, not a directory")
        return from_manifest(path)
    raise InputError(str(path), f"unknown adapter '{adapter}' (auto, demo, folder, manifest, mtat, jamendo, gtzan)")
