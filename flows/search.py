from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from chorus.config import ChorusSettings
from chorus_flows._common import FLOW_OPTIONS, SettingsParameter, confine_inputs, holding_state, resolve
from chorus_tasks import search as search_tasks
from chorus_tasks._policies import limited, task_seconds


@flow(name="index", **FLOW_OPTIONS)
def index(settings: ChorusSettings | None = SettingsParameter, if_models: bool = False) -> dict[str, Any]:
    """The search index of the champions (semantic vectors, hash codes, faiss), rebuilt when a
    champion, the features or the search settings change, and its degraded-copy check.

    Args:
        settings: chorus settings laid over those of the process running the flow.
        if_models: A model without a champion yet skips the index instead of failing.
    """
    settings = resolve(settings)
    with holding_state(settings):
        return limited(search_tasks.build_index, task_seconds(settings))(settings, if_models)


@flow(name="search", **FLOW_OPTIONS)
def search(queries: list[str], settings: ChorusSettings | None = SettingsParameter, k: int | None = None,
           mode: str | None = None, out: str | None = None) -> dict[str, Any]:
    """Batch similar-song queries against the champions' index, to Parquet. Reads only: it does
    not wait for a run holding the state directory.

    Args:
        queries: Audio files, folders or track ids (or 6+ character prefixes).
        settings: chorus settings laid over those of the process running the flow.
        k: Neighbours per query; empty: search.k.
        mode: hash, semantic or rerank; empty: search.mode.
        out: Parquet file to write; empty: under <state>/search/results/.
    """
    settings = resolve(settings)
    confine_inputs([q for q in queries if "/" in q or Path(q).expanduser().exists()])  # files and folders, not track ids
    return limited(search_tasks.search, task_seconds(settings))(settings, queries, k, mode, out)
