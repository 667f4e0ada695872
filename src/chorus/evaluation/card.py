"""A model card per registered version (Mitchell et al. 2019, "Model Cards for Model Reporting"):
what a reviewer reads before relying on a model. Built from what chorus already knows (the
registry, the tracks table, the model's scores on the test split, the audit of gate decisions)
and written as a self-contained HTML page and as markdown (an MLflow artifact of the version).

The pure part lives here: per-track results to slices and failure cases, and the two renderings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from chorus.evaluation.report import PAGE_CSS
from chorus.pages import render_page

DURATION_EDGES_S = (0.0, 30.0, 120.0, 360.0, float("inf"))  # clip, short, song, long
LOUDNESS_BUCKETS = ("quiet third", "middle third", "loud third")
FAILURES_SHOWN = 5


@dataclass
class Section:
    """A heading, a paragraph and/or a table (header, rows)."""

    heading: str
    text: str = ""
    header: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)


@dataclass
class ModelCard:
    title: str
    sections: list[Section]

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for s in self.sections:
            out += [f"## {s.heading}", ""]
            if s.text:
                out += [s.text, ""]
            if s.header:
                out += ["| " + " | ".join(map(_md_cell, s.header)) + " |", "|" + "---|" * len(s.header)]
                out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in s.rows]
                out.append("")
        return "\n".join(out)

    def html(self) -> str:
        """The card as a page (the ``sections.html.j2`` template, autoescaped)."""
        return render_page("sections.html.j2", title=self.title, css=PAGE_CSS,
                           sections=[{"heading": s.heading, "text": s.text, "header": s.header, "rows": s.rows}
                                     for s in self.sections])


def _md_cell(value: Any) -> str:
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def duration_bucket(seconds: float) -> str:
    for low, high in zip(DURATION_EDGES_S[:-1], DURATION_EDGES_S[1:], strict=True):
        if low <= seconds < high:
            return f"{low:.0f}-{high:.0f} s" if high != float("inf") else f">= {low:.0f} s"
    return "unknown"


def loudness_buckets(level_db: pd.Series) -> pd.Series:
    """Terciles of each track's mean log-mel level (dB), named with their ranges."""
    if level_db.nunique() < 3:
        return pd.Series("all", index=level_db.index)
    codes = pd.qcut(level_db.rank(method="first"), 3, labels=False)
    names = {}
    for code, name in enumerate(LOUDNESS_BUCKETS):
        part = level_db[codes == code]
        names[code] = f"{name} ({part.min():.1f} to {part.max():.1f} dB)"
    return codes.map(names)


def slice_rows(results: pd.DataFrame, by: str, score: str, order: tuple[str, ...] = ()) -> list[list[Any]]:
    """(slice, tracks, mean of ``score``) per value of column ``by``: largest slice first, or in
    ``order`` of the slices' names (e.g. LOUDNESS_BUCKETS, quiet to loud)."""
    grouped = results.groupby(by, sort=False)[score].agg(["size", "mean"])
    if order:
        rank = {name: i for i, name in enumerate(order)}
        grouped = grouped.sort_index(key=lambda names: names.map(lambda n: rank.get(str(n).split(" (")[0], len(rank))))
    else:
        grouped = grouped.sort_values("size", ascending=False, kind="stable")
    return [[str(name), int(row["size"]), float(row["mean"])] for name, row in grouped.iterrows()]


def single_label_results(track_ids: np.ndarray, probabilities: np.ndarray, truth: np.ndarray, model_labels: list[str],
                         task_labels: list[str]) -> pd.DataFrame:
    """Per test track: actual and predicted class, the predicted class's probability, correct.

    Parameters
    ----------
    track_ids : (tracks,) sorted track ids; probabilities : (tracks, model classes)
    truth : (tracks,) indices into ``task_labels``; model_labels : the model's own classes
    """
    predicted = [model_labels[i] for i in probabilities.argmax(1)]
    actual = [task_labels[i] for i in truth]
    return pd.DataFrame({"track_id": track_ids, "actual": actual, "predicted": predicted,
                         "confidence": probabilities.max(1), "correct": [a == p for a, p in zip(actual, predicted, strict=True)]})


def multi_label_results(track_ids: np.ndarray, scores: np.ndarray, truth: np.ndarray, labels: list[str]) -> pd.DataFrame:
    """Per test track: its average precision over the labels (the ranking of its true labels), and
    its highest-scored label that is not true (the most confident false positive)."""
    from chorus.metrics.classification import average_precision

    rows = []
    for track, s, t in zip(track_ids, scores, truth, strict=True):
        wrong = np.where(t > 0, -np.inf, s)
        worst = int(wrong.argmax())
        rows.append({"track_id": track, "average_precision": average_precision(t, s) if t.sum() else np.nan,
                     "actual": ", ".join(label for label, v in zip(labels, t, strict=True) if v > 0),
                     "predicted": labels[worst], "confidence": float(s[worst]), "correct": False})
    return pd.DataFrame(rows)


def failure_rows(results: pd.DataFrame, tracks: pd.DataFrame) -> list[list[Any]]:
    """The most confident wrong predictions (single-label) or false positives (multi-label)."""
    wrong = results[~results["correct"]].sort_values("confidence", ascending=False).head(FAILURES_SHOWN)
    names = tracks.set_index("track_id")["uri"].map(lambda u: str(u).rsplit("/", 1)[-1])
    return [[r.track_id, names.get(r.track_id, ""), r.actual, r.predicted, float(r.confidence)] for r in wrong.itertuples()]
