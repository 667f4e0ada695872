from __future__ import annotations

from typing import Any

from prefect import flow

from chorus.config import ChorusSettings
from chorus_flows._common import FLOW_OPTIONS, SettingsParameter, resolve
from chorus_tasks import tag as tag_tasks
from chorus_tasks._policies import limited, task_seconds


@flow(name="tag", **FLOW_OPTIONS)
def tag(paths: list[str], settings: ChorusSettings | None = SettingsParameter, model: str | None = None,
        alias: str = "champion", out: str | None = None, user: str | None = None,
        group: str | None = None) -> dict[str, Any]:
    """Batch tagging (e.g. on a schedule over an incoming folder): a registered model's
    predictions for audio files, to Parquet.

    Args:
        paths: Audio files or folders.
        settings: chorus settings laid over those of the process running the flow.
        model: Registered model name; empty: the style model (chorus-style).
        alias: Alias or version of the model.
        out: Parquet file to write; empty: under <state>/tags/.
        user: A listener's user id: the personalised mood model's moods as they hear each file.
        group: Or a group, attribute=value (e.g. culture=culture_a).
    """
    settings = resolve(settings)
    return limited(tag_tasks.tag, task_seconds(settings))(settings, paths, model, alias, out, user, group)
