"""The targets of each task family, per split, from the tracks table and the voted labels:
``style`` and ``hash`` (a tracks column), ``mood`` (multi-label truth), ``tags`` (none: a
pretrained tagger's own vocabulary) and the backbone's ``pretext`` heads."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from chorus.config import TrainSettings
from chorus.datasets.render import instrument_family
from chorus.families.base import TaskFamily, TaskTargets
from chorus.label_tasks import MultiLabelTruth


def pretext_columns(tracks: pd.DataFrame, tasks: list[str]) -> pd.DataFrame:
    """Pretext label columns; ``instrument`` is derived from the demo's planted mood when absent."""
    tracks = tracks.copy()
    if "instrument" in tasks and "instrument" not in tracks.columns and "mood" in tracks.columns:
        tracks["instrument"] = tracks["mood"].map(lambda m: instrument_family(m) if isinstance(m, str) else None)
    missing = [t for t in tasks if t not in tracks.columns]
    if missing:
        raise ValueError(f"pretext task column(s) {missing} not in the tracks table")
    return tracks


def task_targets(task: TaskFamily, tracks: pd.DataFrame, settings: TrainSettings,
                 mood_labels: MultiLabelTruth | None = None) -> TaskTargets:
    """Targets of a task family. The test split is included (for evaluation) but never trained on.

    Parameters
    ----------
    task : {"style", "hash", "tags", "mood", "pretext"}
        ``style`` and ``hash``: a class index per track from ``settings.task``'s column; ``mood``:
        a 0/1 vector over the multi-label vocabulary; ``tags``: none (a pretrained tagger's own);
        ``pretext``: one class index per pretext head.
    tracks : pd.DataFrame
        The training tracks (track_id, split and the label columns).
    settings : TrainSettings
    mood_labels : MultiLabelTruth, optional
        The multi-label truth (``mood`` only).

    Returns
    -------
    TaskTargets
        ``labels`` and, per split, track -> target.

    Examples
    --------
    >>> import pandas as pd
    >>> from chorus.config import TrainSettings
    >>> tracks = pd.DataFrame({"track_id": ["a", "b", "c"], "split": ["train", "train", "test"],
    ...                        "style": ["bach", "trecento", "bach"]})
    >>> targets = task_targets("style", tracks, TrainSettings())
    >>> targets.labels, targets.splits["train"], targets.splits["test"]
    (['bach', 'trecento'], {'a': 0, 'b': 1}, {'c': 0})
    """
    splits = ("train", "valid", "test")
    if task in ("style", "hash"):
        column = settings.task
        labelled = tracks[tracks[column].notna()]
        classes = sorted(labelled.loc[labelled["split"] == "train", column].astype(str).unique().tolist())
        if len(classes) < 2:
            raise ValueError(f"task '{column}' needs at least two classes in the train split, found {classes}")
        index = {c: i for i, c in enumerate(classes)}
        return TaskTargets(classes, {s: {t: index[str(v)] for t, v in zip(labelled.loc[labelled.split == s, "track_id"],
                                                                          labelled.loc[labelled.split == s, column], strict=True)
                                         if str(v) in index} for s in splits})
    if task == "tags":  # a pretrained tagger's own vocabulary; nothing in the corpus is labelled with it
        return TaskTargets([], {s: {} for s in splits})
    if task == "mood":
        if mood_labels is None or not mood_labels.labels:
            raise ValueError(f"the multi-label task '{settings.mood_task}' has no labels (the voted moods need the "
                             "labels stage; a column task needs its column in the tracks table)")
        vocabulary = mood_labels.vocabulary
        hot = {t: np.isin(vocabulary, labels).astype(np.float32) for t, labels in mood_labels.labels.items()}
        return TaskTargets(list(vocabulary), {s: {t: hot[t] for t in tracks.loc[tracks.split == s, "track_id"] if t in hot}
                                         for s in splits})
    columns = pretext_columns(tracks, settings.backbone.tasks)
    names, sizes, indices = [], [], []
    labelled = columns.dropna(subset=settings.backbone.tasks)
    for column in settings.backbone.tasks:
        values = sorted(labelled.loc[labelled.split.isin(["train", "valid"]), column].astype(str).unique().tolist())
        names += [f"{column}:{v}" for v in values]
        sizes.append(len(values))
        indices.append({v: i for i, v in enumerate(values)})
    # The backbone learns from train + valid only; it validates on valid (it is a feature
    # extractor, judged by the models built on it).
    def row(r: Any) -> np.ndarray:
        return np.array([indices[i].get(str(r[c]), 0) for i, c in enumerate(settings.backbone.tasks)], np.int64)

    rows = {s: {r.track_id: row(r._asdict()) for r in labelled[labelled.split == s].itertuples()} for s in ("train", "valid")}
    return TaskTargets(names, {**rows, "test": {}}, sizes)
