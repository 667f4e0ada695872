"""Great Expectations 1.x suites for chorus's tables, and one call to validate a DataFrame.

Each table has a suite; ``validate_table`` runs it through a Checkpoint whose action updates Data
Docs under the state directory, and raises ``ValidationFailedError`` naming each failed
expectation, its column and example rows.
"""

from __future__ import annotations

import html
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pandas as pd

from chorus import MOODS
from chorus.errors import ValidationFailedError

log = logging.getLogger(__name__)

SPLITS = ["train", "valid", "test"]
DOCS_SITE = "chorus_data_docs"  # the ephemeral context already owns "local_site"


def param(params: dict[str, Any], key: str, default: Any = None, as_list: bool = False) -> Any:
    """A run-time parameter of a suite: the suite is built once per table (and parameter names)
    and reused, its values passed at each run. Building suites costs ~4x the validation itself."""
    if key not in params:
        return default
    return {"$PARAMETER": f"{key}_list" if as_list else key}


def parameter_values(params: dict[str, Any]) -> dict[str, Any]:
    values = dict(params)
    values.update({f"{k}_list": [v] for k, v in params.items() if not isinstance(v, (list, tuple, dict))})
    return values


def with_known_tracks(checks: pd.DataFrame, track_ids: Any) -> pd.DataFrame:
    """``checks`` with ``known_track``: whether each row's track_id is one of ``track_ids``. With
    a count of distinct ids, what a suite uses to say "exactly these tracks" (a set of ids as a GX
    parameter is copied in every validation, at a cost that grows with the catalogue)."""
    return checks.assign(known_track=checks["track_id"].isin(set(track_ids)).to_numpy())


def _exactly_the_tracks(gxe: Any, params: dict[str, Any]) -> list[Any]:
    """Every row's track is known, and there are as many distinct tracks as ``tracks``."""
    return [gxe.ExpectColumnValuesToBeInSet(column="known_track", value_set=[True]),
            gxe.ExpectColumnUniqueValueCountToBeBetween(column="track_id", min_value=param(params, "tracks"),
                                                        max_value=param(params, "tracks"))]


def _tracks_suite(gxe: Any, params: dict[str, Any]) -> list[Any]:
    return [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=["track_id", "uri", "duration_s", "sample_rate", "channels", "codec", "source", "split"],
            exact_match=False,
        ),
        gxe.ExpectColumnValuesToNotBeNull(column="track_id"),
        gxe.ExpectColumnValuesToBeUnique(column="track_id"),
        gxe.ExpectColumnValuesToMatchRegex(column="track_id", regex=r"^[0-9a-f]{16}$"),
        gxe.ExpectColumnValuesToNotBeNull(column="uri"),
        gxe.ExpectColumnValuesToBeUnique(column="uri"),
        gxe.ExpectColumnValuesToBeBetween(
            column="duration_s", min_value=param(params, "min_duration_s", 0.0), max_value=param(params, "max_duration_s", None)
        ),
        gxe.ExpectColumnValuesToBeBetween(column="sample_rate", min_value=4000, max_value=384000),
        gxe.ExpectColumnValuesToBeBetween(column="channels", min_value=1, max_value=64),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=SPLITS),
    ]


def _users_suite(gxe: Any, params: dict[str, Any]) -> list[Any]:
    return [
        gxe.ExpectColumnToExist(column="user_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
        gxe.ExpectColumnValuesToBeUnique(column="user_id"),
    ]


def _follows_suite(gxe: Any, params: dict[str, Any]) -> list[Any]:
    return [
        gxe.ExpectColumnToExist(column="follower"),
        gxe.ExpectColumnToExist(column="followee"),
        gxe.ExpectColumnValuesToNotBeNull(column="follower"),
        gxe.ExpectColumnValuesToNotBeNull(column="followee"),
    ]


def _playlists_suite(gxe: Any, params: dict[str, Any]) -> list[Any]:
    return [
        gxe.ExpectColumnToExist(column="playlist_id"),
        gxe.ExpectColumnToExist(column="owner"),
        gxe.ExpectColumnToExist(column="tags"),
        gxe.ExpectColumnValuesToNotBeNull(column="playlist_id"),
        gxe.ExpectColumnValuesToBeUnique(column="playlist_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="owner"),
    ]


def _playlist_tracks_suite(gxe: Any, params: dict[str, Any]) -> list[Any]:
    return [
        gxe.ExpectColumnToExist(column="playlist_id"),
        gxe.ExpectColumnToExist(column="track_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="playlist_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="track_id"),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["playlist_id", "track_id"]),
    ]


def _labels_suite(gxe: Any, params: dict[str, Any]) -> list[Any]:
    checks = [
        gxe.ExpectColumnValuesToNotBeNull(column="scope"),
        gxe.ExpectColumnValuesToNotBeNull(column="track_id"),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["scope", "track_id"]),
    ]

    checks += [gxe.ExpectColumnValuesToBeBetween(column=f"score_{m}", min_value=0.0, max_value=1.0) for m in MOODS]
    return checks


def _feature_segments_suite(gxe: Any, params: dict[str, Any]) -> list[Any]:
    """A features shard, one row per segment (see chorus.features.store.segment_checks)."""
    checks = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1 if "tracks" in params else 0),
        gxe.ExpectColumnValuesToNotBeNull(column="track_id"),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["track_id", "segment"]),
        gxe.ExpectColumnValuesToBeBetween(column="segment", min_value=0),
        gxe.ExpectColumnValuesToBeInSet(column="finite", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="min_db", min_value=param(params, "db_floor")),
        gxe.ExpectColumnValuesToBeBetween(column="max_db", max_value=param(params, "db_max")),
    ]
    if "tracks" in params:  # every extracted track is there, and nothing else
        checks += _exactly_the_tracks(gxe, params)
    checks += [gxe.ExpectColumnValuesToBeInSet(column=key, value_set=param(params, key, as_list=True))
               for key in sorted(params) if key.startswith("size_")]
    return checks


def _search_index_suite(gxe: Any, params: dict[str, Any]) -> list[Any]:
    """A search index, one row per track (see chorus.search.index.index_checks)."""
    return [
        gxe.ExpectColumnValuesToNotBeNull(column="track_id"),
        gxe.ExpectColumnValuesToBeUnique(column="track_id"),
        *_exactly_the_tracks(gxe, params),
        gxe.ExpectColumnValuesToBeInSet(column="finite", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="norm", min_value=0.999, max_value=1.001),
        gxe.ExpectColumnValuesToBeInSet(column="code_bytes", value_set=param(params, "code_bytes", as_list=True)),
    ]


def _melody_notes_suite(gxe: Any, params: dict[str, Any]) -> list[Any]:
    """Notes or melody lines per track and source (see chorus.melody.extract)."""
    return [
        gxe.ExpectColumnValuesToNotBeNull(column="track_id"),
        gxe.ExpectColumnValuesToBeInSet(column="source", value_set=["audio", "score"]),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["track_id", "source", "note"]),
        gxe.ExpectColumnValuesToBeBetween(column="pitch", min_value=21, max_value=108),
        gxe.ExpectColumnValuesToBeBetween(column="onset_s", min_value=0.0),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="offset_s", column_B="onset_s", or_equal=True),
        gxe.ExpectColumnValuesToBeBetween(column="amplitude", min_value=0.0, max_value=1.0),
    ]


SUITES: dict[str, Callable[[Any, dict[str, Any]], list[Any]]] = {
    "tracks": _tracks_suite,
    "users": _users_suite,
    "follows": _follows_suite,
    "playlists": _playlists_suite,
    "playlist_tracks": _playlist_tracks_suite,
    "labels": _labels_suite,
    "feature_segments": _feature_segments_suite,
    "search_index": _search_index_suite,
    "melody_notes": _melody_notes_suite,
}


class Validator:
    """An ephemeral GX context with one Data Docs site under ``docs_dir``.

    GX import and context set-up cost seconds, so one Validator serves many tables."""
    _lock = threading.Lock()

    def __init__(self, docs_dir: Path | None = None) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx

        from chorus.validation.docs_views import site_views  # imports GX (slow): only with a validator

        self._gx = gx
        self.context = gx.get_context(mode="ephemeral")
        try:  # progress bars are noise in logs
            from great_expectations.data_context.types.base import ProgressBarsConfig

            self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        except Exception:  # pragma: no cover - older/newer GX layouts
            pass
        self.docs_dir = docs_dir
        if docs_dir is not None:
            docs_dir.mkdir(parents=True, exist_ok=True)
            self.context.add_data_docs_site(
                site_name=DOCS_SITE,
                site_config=cast(Any, {
                    "class_name": "SiteBuilder",
                    **site_views(),  # templates compiled once per process, not once per build
                    "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
                }),
            )
        self.source = self.context.data_sources.add_pandas("chorus")
        # (table, parameter names, update_docs) -> (checkpoint, the columns its suite reads or None: all)
        self._checkpoints: dict[tuple[str, tuple[str, ...], bool], tuple[Any, frozenset[str] | None]] = {}
        self._unrendered: list[Any] = []  # results validated with update_docs=False, not yet in the docs

    def validate(self, df: pd.DataFrame, table: str, params: dict[str, Any] | None = None,
                 update_docs: bool = True) -> dict[str, Any]:
        """Validate ``df`` with the suite of ``table``; raise ValidationFailedError on failure.

        ``update_docs=False`` skips rebuilding Data Docs (a third of the cost) for callers that
        validate many batches and call ``build_docs`` once at the end."""
        if table not in SUITES:
            raise KeyError(f"no expectation suite for table '{table}'")
        params = {k: v for k, v in (params or {}).items() if v is not None}
        with self._lock:
            checkpoint, columns = self._checkpoint(table, params, update_docs)
            checked = df if columns is None else df[[c for c in df.columns if c in columns]]
            try:
                result = checkpoint.run(batch_parameters={"dataframe": _gx_friendly(checked)},
                                        expectation_parameters=parameter_values(params))
            finally:
                self._forget_batches()
            if not update_docs and self.docs_dir is not None:
                self._unrendered.extend(result.run_results)
        failures = []
        evaluated = 0
        for run in result.run_results.values():
            for item in run.results:
                evaluated += 1
                if item.success:
                    continue
                failures.append(describe_failure(item))
        docs = str(self.docs_dir / "index.html") if self.docs_dir is not None else None
        if failures:
            raise ValidationFailedError(table, failures, docs)
        return {"table": table, "rows": len(df), "expectations": evaluated, "docs": docs}

    def _forget_batches(self) -> None:
        """Drop the batches GX's execution engine keeps after a run: the last table validated (its
        escaped copy) would otherwise live until the next validation."""
        batches = self.source.get_execution_engine().batch_manager
        batches.batch_data_cache.clear()
        batches.reset_batch_cache()

    def _checkpoint(self, table: str, params: dict[str, Any], update_docs: bool) -> tuple[Any, frozenset[str] | None]:
        """The table's checkpoint, built on first use for this set of parameter names, and the
        columns its suite reads (None: the table's whole column set)."""
        gx = self._gx
        import great_expectations.expectations as gxe

        key = (table, tuple(sorted(params)), update_docs)
        if key in self._checkpoints:
            return self._checkpoints[key]
        name = f"{table}_{len(self._checkpoints) + 1}"
        asset = self.source.add_dataframe_asset(name)
        batch = asset.add_batch_definition_whole_dataframe("all")
        suite = self.context.suites.add(gx.ExpectationSuite(name=name))
        expectations = SUITES[table](gxe, params)
        for expectation in expectations:
            suite.add_expectation(expectation)
        definition = self.context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
        actions = []
        if self.docs_dir is not None and update_docs:
            actions.append(gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=[DOCS_SITE]))
        checkpoint = self.context.checkpoints.add(gx.Checkpoint(
            name=name, validation_definitions=[definition], actions=actions,
            # BASIC has what a failure message needs (counts, a few unexpected values, the observed
            # value) at about half the cost of SUMMARY's per-value tallies
            result_format={"result_format": "BASIC", "partial_unexpected_count": 5},
        ))
        self._checkpoints[key] = (checkpoint, columns_read(expectations))
        return self._checkpoints[key]

    def build_docs(self) -> str | None:
        """Render the validations not yet in Data Docs, and the index. Incremental: a long-lived
        process (``chorus serve``) would otherwise re-render every result it ever validated."""
        if self.docs_dir is None:
            return None
        with self._lock:
            if self._unrendered:
                self.context.build_data_docs(site_names=[DOCS_SITE], resource_identifiers=self._unrendered)
                self._unrendered = []
        return str(self.docs_dir / "index.html")


def columns_read(expectations: list[Any]) -> frozenset[str] | None:
    """The columns a suite's expectations read, so GX is handed only those; None when one reads
    the table's column set (ExpectTableColumns*, ExpectTableColumnCount*) or filters rows by a
    condition, which may name any column. Row counts and column existence are the same on the
    narrower frame: it keeps every row, and a named column that is missing stays missing."""
    read: set[str] = set()
    for expectation in expectations:
        if type(expectation).__name__.startswith("ExpectTableColumn") or getattr(expectation, "row_condition", None):
            return None
        read.update(v for v in (getattr(expectation, a, None) for a in ("column", "column_A", "column_B")) if isinstance(v, str))
        read.update(getattr(expectation, "column_list", None) or [])
    return frozenset(read)


def describe_failure(item: Any) -> str:
    config = item.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k in ("column", "column_list", "column_set")}
    where = ", ".join(f"{v}" for v in kwargs.values())
    res = item.result or {}
    text = f"{config.type}({where})"
    if res.get("unexpected_count") is not None:
        examples = [html.unescape(v) if isinstance(v, str) else v for v in res.get("partial_unexpected_list", [])[:5]]
        text += f": {res['unexpected_count']} unexpected, e.g. {examples}"
    elif item.exception_info and item.exception_info.get("raised_exception"):
        text += f": {item.exception_info.get('exception_message')}"
    elif res.get("observed_value") is not None:
        text += f": observed {res['observed_value']}"
    return text


def _gx_friendly(df: pd.DataFrame) -> pd.DataFrame:
    """Columns GX can print: list values (playlist tags) joined into strings, and every string
    HTML-escaped (Arrow-backed string columns stay Arrow-backed): Data Docs print a table cell's
    string as HTML, and these come from users (file names, tags, labels). Each suite's rules hold
    alike for the escaped values (fixed vocabularies, uniqueness, nulls, a hex pattern); failure
    messages unescape them."""
    import numpy as np

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple, np.ndarray)):
            value = ";".join(map(str, value))
        return html.escape(value) if isinstance(value, str) else value

    out = df.copy(deep=False)  # the string columns are replaced below, the rest only read
    for column in out.columns:
        if str(out[column].dtype) in ("str", "string"):  # Arrow-backed: escaped in place, no Python string per cell
            out[column] = _escaped(out[column])
        elif out[column].dtype == object:
            out[column] = out[column].map(plain)
    return out


# html.escape's replacements, "&" first
_HTML_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"), ("'", "&#x27;"))


def _escaped(strings: pd.Series) -> pd.Series:
    """``html.escape`` of each value of a string column, vectorised."""
    for raw, escaped in _HTML_ESCAPES:
        if strings.str.contains(raw, regex=False).any():  # ids and vocabularies rarely need any: no copy
            strings = strings.str.replace(raw, escaped, regex=False)
    return strings
