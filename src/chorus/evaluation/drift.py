"""Drift watch: does a new batch of audio still look like what the champion learned from?

Each track is summarised by what its stored features say (loudness, the mean level of 16 groups
of mel bands, the mean of each MFCC, and its duration); each summary's distribution in the batch
is compared with the champion's training tracks by a two-sample Kolmogorov-Smirnov test, and the
champion's predicted-class mix by a chi-square test of the two count rows. The p-values of all
these tests are corrected together for the false discovery rate (Benjamini-Hochberg). The batch
drifts when the share of tests that reject exceeds ``threshold``.

scipy's tests, not a drift library: they are exact, need nothing beyond scipy (already a
dependency), and say precisely what was tested; evidently's presets compute the same tests with
a dashboard and many more dependencies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from chorus.evaluation.report import PAGE_CSS
from chorus.pages import render_page

BAND_GROUPS = 16
CLASS_MIX = "predicted class mix"


def track_summaries(track_ids: np.ndarray, logmel: np.ndarray, mfcc_stats: np.ndarray | None, n_mfcc: int) -> pd.DataFrame:
    """One row per track (index: track id) of per-segment summaries averaged over its segments.

    Parameters
    ----------
    track_ids : (segments,) the track of each segment
    logmel : (segments, n_mels, frames) dB
    mfcc_stats : (segments, 6 * n_mfcc) in ``MFCC_STATS`` order, or None
    """
    groups = np.array_split(np.arange(logmel.shape[1]), BAND_GROUPS)
    per_band = logmel.mean(axis=2)  # (segments, n_mels)
    columns: dict[str, np.ndarray] = {"level_db": per_band.mean(axis=1)}
    for i, bands in enumerate(groups):
        columns[f"mel_{int(bands[0]):03d}_{int(bands[-1]):03d}_db"] = per_band[:, bands].mean(axis=1)
    if mfcc_stats is not None:
        for i in range(n_mfcc):
            columns[f"mfcc_{i:02d}_mean"] = mfcc_stats[:, i]
    frame = pd.DataFrame(columns)
    frame["track_id"] = track_ids
    return frame.groupby("track_id", sort=True).mean()


@dataclass
class DriftResult:
    """The tests, their FDR-corrected q-values, and the verdict."""

    tests: pd.DataFrame  # test, statistic, p, q, drifted, reference, batch (medians or shares)
    reference_tracks: int
    batch_tracks: int
    fdr: float
    threshold: float
    drifted_share: float = field(init=False)
    alarm: bool = field(init=False)

    def __post_init__(self) -> None:
        self.drifted_share = float(self.tests["drifted"].mean()) if len(self.tests) else 0.0
        self.alarm = self.drifted_share > self.threshold

    def as_dict(self) -> dict[str, Any]:
        drifted = self.tests[self.tests["drifted"]].sort_values("q")
        return {"alarm": self.alarm, "drifted_share": round(self.drifted_share, 4), "threshold": self.threshold,
                "fdr": self.fdr, "reference_tracks": self.reference_tracks, "batch_tracks": self.batch_tracks,
                "tests": len(self.tests), "drifted": drifted["test"].tolist(),
                "method": "two-sample Kolmogorov-Smirnov per summary, chi-square on the predicted class mix, "
                          "Benjamini-Hochberg over all tests"}


def compare(reference: pd.DataFrame, batch: pd.DataFrame, reference_classes: pd.Series | None = None,
            batch_classes: pd.Series | None = None, fdr: float = 0.05, threshold: float = 0.1) -> DriftResult:
    """Every summary column of ``batch`` against ``reference`` (tracks as rows), and the class mix
    of the predicted classes when given."""
    rows = []
    for column in reference.columns:
        a, b = reference[column].dropna().to_numpy(), batch[column].dropna().to_numpy()
        if len(a) < 2 or len(b) < 2:
            continue
        test = stats.ks_2samp(a, b)
        rows.append({"test": column, "statistic": float(test.statistic), "p": float(test.pvalue),
                     "reference": float(np.median(a)), "batch": float(np.median(b))})
    if reference_classes is not None and batch_classes is not None and len(batch_classes):
        classes = sorted(set(reference_classes) | set(batch_classes))
        table = np.array([[int((reference_classes == c).sum()) for c in classes], [int((batch_classes == c).sum()) for c in classes]])
        table = table[:, table.sum(axis=0) > 0]
        if table.shape[1] > 1:
            chi2 = stats.chi2_contingency(table)
            top = pd.Series(batch_classes).value_counts(normalize=True)
            rows.append({"test": CLASS_MIX, "statistic": float(chi2.statistic), "p": float(chi2.pvalue),
                         "reference": float(pd.Series(reference_classes).value_counts(normalize=True).max()),
                         "batch": float(top.max())})
    tests = pd.DataFrame(rows, columns=["test", "statistic", "p", "reference", "batch"])
    tests["q"] = stats.false_discovery_control(tests["p"].to_numpy(), method="bh") if len(tests) else []
    tests["drifted"] = tests["q"] < fdr
    return DriftResult(tests, len(reference), len(batch), fdr, threshold)


def drift_html(result: DriftResult, title: str) -> str:
    """The drift report: verdict, then every test sorted by q-value."""
    verdict = (f"DRIFT: {result.drifted_share:.0%} of {len(result.tests)} tests reject at FDR {result.fdr} "
               f"(threshold {result.threshold:.0%})" if result.alarm else
               f"No drift: {result.drifted_share:.0%} of {len(result.tests)} tests reject at FDR {result.fdr} "
               f"(threshold {result.threshold:.0%})")
    rows = [[r.test, r.statistic, r.p, r.q, "yes" if r.drifted else "", r.reference, r.batch]
            for r in result.tests.sort_values("q").itertuples()]
    method = (f"{result.batch_tracks} batch tracks against {result.reference_tracks} training tracks of the champion. "
              f"{result.as_dict()['method']}. Reference and batch: medians (class mix: the largest class's share).")
    return render_page("sections.html.j2", title=title, css=PAGE_CSS, sections=[
        {"heading": "", "strong": verdict, "text": method, "muted": True,
         "header": ["test", "statistic", "p", "q (BH)", "drifted", "reference", "batch"], "rows": rows}])
