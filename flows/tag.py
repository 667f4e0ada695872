from __future__ import annotations

from typing import Any

from prefect import flow

from chorus.config import ChorusSettings
from flows._common import resolve
from tasks import tag as tag_tasks


@flow(name="tag", log_prints=True)
def tag(paths: list[str], settings: ChorusSettings | None = None, model: str | None = None, alias: str = "champion",
        out: str | None = None) -> dict[str, Any]:
    """Batch tagging (e.g. on a schedule over an incoming folder): a registered model's
    predictions for audio files, to Parquet."""
    return tag_tasks.tag(resolve(settings), paths, model, alias, out)
