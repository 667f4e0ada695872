"""Standard datasets in their own layouts: MagnaTagATune, MTG-Jamendo, GTZAN.

Each adapter returns ``AudioCandidates``: one row per clip (uri relative to the dataset root, split,
label columns) and the annotation rows it could not use, with their reason (they join the
ingest quarantine). Multi-label tags are one ``tags`` column, ``;``-separated, so a task reads
any vocabulary from the tracks table.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chorus.audio import AUDIO_SUFFIXES
from chorus.datasets.candidates import AudioCandidates
from chorus.errors import InputError

log = logging.getLogger(__name__)

TAG_SEPARATOR = ";"
SPLITS = ("train", "valid", "test")

# MagnaTagATune's usual split by the first character of the clip's folder (0-f)
MTAT_FOLDER_SPLIT = {**{c: "train" for c in "0123456789ab"}, "c": "valid", **{c: "test" for c in "def"}}

# MTG-Jamendo tag categories (the prefix before '---' in a tag)
JAMENDO_CATEGORIES = ("mood/theme", "genre", "instrument")
# each category's own TSVs: autotagging_moodtheme.tsv, autotagging_moodtheme-train.tsv, ...
JAMENDO_FILE_INFIX = {"mood/theme": "_moodtheme", "genre": "_genre", "instrument": "_instrument", "top50": "_top50tags"}
JAMENDO_SPLIT_NAMES = {"train": "train", "validation": "valid", "test": "test"}

GTZAN_RANDOM_SPLIT_WARNING = ("GTZAN without split files: a random stratified split, which inflates accuracy "
                              "(the same artists fall on both sides); give the fault-filtered lists with ingest.split_files")


def _rejected(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["uri", "reason", "detail", "manifest_row"])


def read_split_files(split_files: dict[str, str]) -> dict[str, str]:
    """{entry -> split} from one list per split (a clip id, file name or relative path per line)."""
    chosen: dict[str, str] = {}
    for split, path in split_files.items():
        if split not in SPLITS:
            raise InputError(f"ingest.split_files.{split}", f"split must be one of {', '.join(SPLITS)}")
        file = Path(path).expanduser()
        if not file.is_file():
            raise InputError(str(file), "split file not found")
        for line in file.read_text().splitlines():
            entry = line.strip()
            if entry and not entry.startswith("#"):
                chosen[entry] = split
    return chosen


def _split_from_lists(keys: list[str], lists: dict[str, str]) -> str | None:
    """The split of the first of a clip's keys (id, path, file name, stem) named in the lists."""
    return next((lists[k] for k in keys if k in lists), None)


def top_tags(tag_lists: list[list[str]], n: int | None) -> list[str]:
    """The n most frequent tags (ties by name), or every tag when n is None."""
    counts = pd.Series([t for tags in tag_lists for t in tags], dtype=object).value_counts()
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [t for t, _ in (ranked if n is None else ranked[:n])]


# --- MagnaTagATune ------------------------------------------------------------------------


def from_mtat(root: Path, top_n: int | None = 50, split_files: dict[str, str] | None = None) -> AudioCandidates:
    """``annotations_final.csv`` (tab-separated: clip_id, one 0/1 column per tag, mp3_path) and
    the mp3 tree under ``root``; tags are the ``top_n`` most frequent; split by folder (0-9 and
    a-b train, c valid, d-f test) or by ``split_files``."""
    annotations = root / "annotations_final.csv"
    if not annotations.is_file():
        raise InputError(str(annotations), "MagnaTagATune needs annotations_final.csv in the dataset root")
    table = pd.read_csv(annotations, sep="\t", dtype=str, keep_default_na=False)
    for needed in ("clip_id", "mp3_path"):
        if needed not in table.columns:
            raise InputError(str(annotations), f"missing column '{needed}'", f"columns start {list(table.columns[:4])}")
    tag_columns = [c for c in table.columns if c not in ("clip_id", "mp3_path")]
    lists = read_split_files(split_files) if split_files else None
    rows, rejected, tag_lists = [], [], []
    for i, record in enumerate(table.to_dict("records")):
        line = i + 2  # 1-based, after the header
        path = str(record["mp3_path"]).strip()
        values = {c: str(record[c]).strip() for c in tag_columns}
        bad = [c for c, v in values.items() if v not in ("0", "1")]
        if not path or not record["clip_id"].strip():
            rejected.append({"uri": path or f"clip {record['clip_id']}", "reason": "bad_annotation",
                             "detail": f"{annotations.name} line {line}: empty clip_id or mp3_path", "manifest_row": line})
            continue
        if bad:
            rejected.append({"uri": path, "reason": "bad_annotation", "manifest_row": line,
                             "detail": f"{annotations.name} line {line}: tag '{bad[0]}' is {values[bad[0]]!r}, not 0 or 1"})
            continue
        if lists is not None:
            split = _split_from_lists([record["clip_id"].strip(), path, Path(path).name], lists)
            if split is None:
                rejected.append({"uri": path, "reason": "not_in_split_files", "manifest_row": line,
                                 "detail": f"clip {record['clip_id']} is in none of the split files"})
                continue
        else:
            folder = path.split("/", 1)[0].lower()
            split = MTAT_FOLDER_SPLIT.get(folder)
            if split is None or "/" not in path:
                rejected.append({"uri": path, "reason": "bad_annotation", "manifest_row": line,
                                 "detail": f"{annotations.name} line {line}: mp3_path is not under a 0-f folder"})
                continue
        tags = [c for c, v in values.items() if v == "1"]
        tag_lists.append(tags)
        rows.append({"uri": path, "split": split, "clip_id": record["clip_id"].strip(), "manifest_row": line, "_tags": tags})
    vocabulary = set(top_tags(tag_lists, top_n))
    for row in rows:
        row["tags"] = TAG_SEPARATOR.join(t for t in row.pop("_tags") if t in vocabulary)
    return AudioCandidates(pd.DataFrame(rows), root.resolve(), "mtat", annotations, _rejected(rejected),
                      notes=[f"MagnaTagATune: {len(vocabulary)} tags (top {top_n})",
                             "split from files" if lists is not None else "split by folder: 0-b train, c valid, d-f test"])


# --- MTG-Jamendo --------------------------------------------------------------------------


def _jamendo_rows(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows of an autotagging TSV (TRACK_ID, ARTIST_ID, ALBUM_ID, PATH, DURATION, then one tag per
    field) and the lines that break the format."""
    rows, rejected = [], []
    with path.open(newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if not header or header[:5] != ["TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION"]:
            raise InputError(str(path), "not an MTG-Jamendo autotagging TSV",
                             "header must start TRACK_ID, ARTIST_ID, ALBUM_ID, PATH, DURATION")
        for line, fields in enumerate(reader, start=2):
            if not fields:
                continue
            where = f"{path.name} line {line}"
            if len(fields) < 6:
                rejected.append({"uri": fields[3] if len(fields) > 3 else f"line {line}", "reason": "bad_annotation",
                                 "detail": f"{where}: {len(fields)} fields, need 5 and at least one tag", "manifest_row": line})
                continue
            try:
                duration = float(fields[4])
            except ValueError:
                rejected.append({"uri": fields[3], "reason": "bad_annotation", "manifest_row": line,
                                 "detail": f"{where}: DURATION {fields[4]!r} is not a number"})
                continue
            tags = [t.strip() for t in fields[5:] if t.strip()]
            malformed = [t for t in tags if "---" not in t]
            if malformed:
                rejected.append({"uri": fields[3], "reason": "bad_annotation", "manifest_row": line,
                                 "detail": f"{where}: tag {malformed[0]!r} is not <category>---<tag>"})
                continue
            rows.append({"track_id_source": fields[0], "artist_id": fields[1], "album_id": fields[2], "uri": fields[3],
                         "listed_duration_s": duration, "_tags": tags, "manifest_row": line})
    return rows, rejected


def _jamendo_tsv(folder: Path, category: str, suffix: str = "", missing: str = "MTG-Jamendo TSV not found") -> Path:
    """The category's own TSV (autotagging_moodtheme<suffix>.tsv ...) if present, else the full
    one (autotagging<suffix>.tsv); ``suffix`` names a split file, e.g. -train."""
    names = [f"autotagging{JAMENDO_FILE_INFIX.get(category, '')}{suffix}.tsv", f"autotagging{suffix}.tsv"]
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise InputError(str(folder / names[0]), missing)


def from_jamendo(root: Path, category: str = "mood/theme", split: str = "split-0",
                 split_files: dict[str, str] | None = None) -> AudioCandidates:
    """``autotagging*.tsv`` (in ``root`` or ``root/data``) with audio under ``root/audio`` (or
    ``root``); tags filtered to ``category`` (mood/theme, genre, instrument: the prefix removed;
    ``top50``: the 50 most frequent tags; ``all``); the official ``splits/<split>/`` files."""
    data = root / "data" if (root / "data").is_dir() else root
    audio = root / "audio" if (root / "audio").is_dir() else root
    if category not in (*JAMENDO_CATEGORIES, "top50", "all"):
        raise InputError(f"ingest.tag_category={category}", "one of mood/theme, genre, instrument, top50, all")
    source = _jamendo_tsv(data, category)
    rows, rejected = _jamendo_rows(source)
    if split_files:
        lists = read_split_files(split_files)
        split_of = {str(r["track_id_source"]): _split_from_lists([str(r["track_id_source"]), str(r["uri"])], lists)
                    for r in rows}
        split_note = "split from files"
    else:
        folder = data / "splits" / split
        if not folder.is_dir():
            raise InputError(str(folder), f"official split folder not found (splits/{split} beside the TSV)")
        split_of = {}
        for official, ours in JAMENDO_SPLIT_NAMES.items():
            listed, _ = _jamendo_rows(_jamendo_tsv(folder, category, f"-{official}", "official split file not found"))
            split_of.update({str(r["track_id_source"]): ours for r in listed})
        split_note = f"official {split}"
    kept = []
    for row in rows:
        row["split"] = split_of.get(str(row["track_id_source"]))
        if row["split"] is None:
            rejected.append({"uri": row["uri"], "reason": "not_in_split_files", "manifest_row": row["manifest_row"],
                             "detail": f"{row['track_id_source']} is in none of the split's files"})
            continue
        tags = list(row.pop("_tags"))
        if category in JAMENDO_CATEGORIES:
            tags = [t.split("---", 1)[1] for t in tags if t.split("---", 1)[0] == category]
        row["_tags"] = tags
        kept.append(row)
    vocabulary = set(top_tags([r["_tags"] for r in kept], 50 if category == "top50" else None))
    for row in kept:
        row["tags"] = TAG_SEPARATOR.join(t for t in row.pop("_tags") if t in vocabulary)
        row["uri"] = str((audio / str(row["uri"])).relative_to(root)) if audio != root else row["uri"]
    table = pd.DataFrame(kept)
    return AudioCandidates(table, root.resolve(), "jamendo", source, _rejected(rejected),
                      notes=[f"MTG-Jamendo {category}: {len(vocabulary)} tags", split_note])


# --- GTZAN --------------------------------------------------------------------------------


def from_gtzan(root: Path, split_files: dict[str, str] | None = None, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
               seed: int = 0) -> AudioCandidates:
    """Folder per genre (``root/<genre>/<file>``, the ``genres/`` folder of the archive or its
    parent); split by ``split_files`` (e.g. the fault-filtered lists; files in none are set aside
    with their reason) or, with a warning, a random split stratified by genre."""
    if (root / "genres").is_dir() and not any((root / d).is_dir() for d in ("blues", "rock")):
        root = root / "genres"
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise InputError(str(root), "GTZAN layout expects root/<genre>/<file>; found no audio files")
    rows, rejected = [], []
    lists = read_split_files(split_files) if split_files else None
    for path in files:
        relative = path.relative_to(root)
        if len(relative.parts) != 2:
            rejected.append({"uri": str(relative), "reason": "bad_layout", "manifest_row": None,
                             "detail": "not directly inside a genre folder (root/<genre>/<file>)"})
            continue
        row = {"uri": str(relative), "genre": relative.parts[0]}
        if lists is not None:
            split = _split_from_lists([str(relative), path.name, path.stem], lists)
            if split is None:
                rejected.append({"uri": str(relative), "reason": "not_in_split_files", "manifest_row": None,
                                 "detail": "in none of the split files (e.g. a faulty GTZAN clip)"})
                continue
            row["split"] = split
        rows.append(row)
    table = pd.DataFrame(rows)
    notes = ["split from files"]
    if lists is None:
        table["split"] = stratified_split(table["genre"], fractions, seed)
        log.warning(GTZAN_RANDOM_SPLIT_WARNING)
        notes = [GTZAN_RANDOM_SPLIT_WARNING]
    return AudioCandidates(table, root.resolve(), "gtzan", None, _rejected(rejected), notes=notes)


def stratified_split(labels: pd.Series, fractions: tuple[float, float, float], seed: int) -> list[str]:
    """Per label, a seeded shuffle cut by ``fractions`` (train, valid, test)."""
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels), dtype=object)
    for _, positions in labels.reset_index(drop=True).groupby(labels.reset_index(drop=True)).indices.items():
        order = rng.permutation(positions)
        n_train = int(round(fractions[0] * len(order)))
        n_valid = int(round(fractions[1] * len(order)))
        out[order[:n_train]] = "train"
        out[order[n_train : n_train + n_valid]] = "valid"
        out[order[n_train + n_valid :]] = "test"
    return out.tolist()
