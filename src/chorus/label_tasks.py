"""Label tasks: what a model learns to predict, and where each track's labels come from.

A *label task* (``LabelTask`` in the settings, ``tasks.<name>``) takes its labels from a tracks
column, an annotation file, or the crowd's voted moods. These functions turn the tracks table
and the voted truths into each task's labels; the stages read the files and pass the tables in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from chorus import MOODS
from chorus.config import LabelTask, stable_hash
from chorus.datasets.candidates import read_manifest_table
from chorus.datasets.standard import top_tags
from chorus.errors import InputError
from chorus.social.voting import SCORE_COLUMNS

VOTED_TASK = "voted_mood"
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class MultiLabelTruth:
    """A multi-label task's vocabulary and each labelled track's labels (within it)."""

    vocabulary: list[str]
    labels: dict[str, list[str]]

    def digest(self) -> str:
        return stable_hash([self.vocabulary, sorted(self.labels.items())])


def _join_annotation_file(tracks: pd.DataFrame, name: str, task: LabelTask) -> None:
    """Copy a ``source: file`` task's label (and split) columns onto ``tracks``, by track id or uri."""
    column = task.column or name
    path = Path(task.file).expanduser()  # type: ignore[arg-type]  # validated: source=file has a file
    if not path.is_file():
        raise InputError(str(path), f"annotation file of task '{name}' not found")
    table = read_manifest_table(path)
    key = "track_id" if "track_id" in table.columns else "uri"
    if key not in table.columns or column not in table.columns:
        raise InputError(str(path), f"task '{name}' needs a track_id or uri column and a '{column}' column",
                         f"its header has {len(table.columns)} columns without them")  # the file's contents are not echoed
    if key == "uri":  # as in the manifest: relative to the annotation file's folder
        table["uri"] = [str((path.parent / u).resolve()) for u in table["uri"]]
    table = table.drop_duplicates(key, keep="last").set_index(key)
    for name_in_file in {column, task.split} & set(table.columns) - {"split"}:
        tracks[name_in_file] = tracks[key].map(table[name_in_file])


def with_task_labels(tracks: pd.DataFrame, tasks: dict[str, LabelTask], split_column: str,
                     tracks_path: Path) -> pd.DataFrame:
    """Tasks' labels joined from their annotation files (``source: file``), and single-label
    values outside a task's given vocabulary blanked (the task ignores those tracks).

    Parameters
    ----------
    tracks : the tracks table (one row per track); changed in place and returned
    tasks : the label tasks by name
    split_column : the column holding each track's split for the task trained (``split``: the corpus's)
    tracks_path : where ``tracks`` was read from (named in errors)
    """
    for name, task in tasks.items():
        column = task.column or name
        if task.source == "file":
            _join_annotation_file(tracks, name, task)
        if task.kind == "single" and task.vocabulary and column in tracks.columns:
            tracks[column] = tracks[column].where(tracks[column].isin(task.vocabulary))
    if split_column != "split":  # the task's own protocol: its split replaces the corpus's
        if split_column not in tracks.columns:
            raise InputError(str(tracks_path), f"no split column '{split_column}'", f"columns: {list(tracks.columns)}")
        tracks["split"] = tracks[split_column].where(tracks[split_column].isin(list(SPLITS)))
        tracks = tracks[tracks["split"].notna()].reset_index(drop=True)
    return tracks


def with_voted_mood(tracks: pd.DataFrame, voted: pd.DataFrame) -> pd.DataFrame:
    """``tracks`` plus ``voted_mood``: the top mood of each track's global voted truth, so
    ``train.task=voted_mood`` trains on the crowd's labels.

    Parameters
    ----------
    voted : the labels table's ``scope``, ``track_id`` and score columns (one score per mood)
    """
    glob = voted[voted["scope"] == "global"].set_index("track_id")
    top = glob[SCORE_COLUMNS].to_numpy().argmax(axis=1)
    tracks[VOTED_TASK] = tracks["track_id"].map(pd.Series([MOODS[j] for j in top], index=glob.index, dtype=object))
    return tracks


def global_voted_labels(voted: pd.DataFrame) -> dict[str, list[str]]:
    """track -> the moods the global vote chose, from the labels table's scope/track_id/labels."""
    glob = voted[voted["scope"] == "global"]
    return {t: [str(m) for m in labels] for t, labels in zip(glob["track_id"], glob["labels"], strict=True)}


def multi_label_truth(task: LabelTask, task_name: str, tracks: pd.DataFrame, voted: dict[str, list[str]],
                      tracks_path: Path) -> MultiLabelTruth:
    """The multi-label task's truth: by default the moods chosen by the global vote (``voted``);
    or a column of ``tracks`` with labels joined by the task's separator (a dataset's tags), its
    vocabulary given or the labels found (the ``top_n`` most frequent in the train split)."""
    if task.source == "voted":
        return MultiLabelTruth(list(task.vocabulary or MOODS), voted)
    column = task.column or task_name
    if column not in tracks.columns:
        raise InputError(str(tracks_path), f"no '{column}' column for task '{task_name}'",
                         f"columns: {', '.join(tracks.columns)}")
    labelled = tracks[tracks[column].notna()]
    lists = {t: [x.strip() for x in str(v).split(task.separator) if x.strip()]
             for t, v in zip(labelled["track_id"], labelled[column], strict=True)}
    train = set(labelled.loc[labelled["split"] == "train", "track_id"])
    vocabulary = list(task.vocabulary) if task.vocabulary else sorted(top_tags([lists[t] for t in train], task.top_n))
    chosen = set(vocabulary)
    return MultiLabelTruth(vocabulary, {t: [x for x in labels if x in chosen] for t, labels in lists.items()})

