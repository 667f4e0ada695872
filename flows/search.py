from __future__ import annotations

from typing import Any

from prefect import flow

from chorus.config import ChorusSettings
from flows._common import holding_state, resolve
from tasks import search as search_tasks


@flow(name="index", log_prints=True)
def index(settings: ChorusSettings | None = None, if_models: bool = False) -> dict[str, Any]:
    """The search index of the champions (semantic vectors, hash codes, faiss), rebuilt when a
    champion, the features or the search settings change, and its degraded-copy check.
    ``if_models``: a model without a champion yet skips the index instead of failing."""
    settings = resolve(settings)
    with holding_state(settings):
        return search_tasks.build_index(settings, if_models)


@flow(name="search", log_prints=True)
def search(queries: list[str], settings: ChorusSettings | None = None, k: int | None = None, mode: str | None = None,
           out: str | None = None) -> dict[str, Any]:
    """Batch similar-song queries (audio files, folders or track ids) against the champions'
    index, to Parquet. Reads only: it does not wait for a run holding the state directory."""
    return search_tasks.search(resolve(settings), queries, k, mode, out)
