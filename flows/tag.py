from __future__ import annotations

from typing import Any

from prefect import flow

from chorus import registry
from chorus.config import ChorusSettings
from chorus_flows._common import FLOW_OPTIONS, SettingsParameter, confine_inputs, resolve
from chorus_tasks import tag as tag_tasks
from chorus_tasks._policies import limited, task_seconds


@flow(name="tag", **FLOW_OPTIONS)
def tag(paths: list[str], settings: ChorusSettings | None = SettingsParameter, model: str | None = None,
        alias: str = "champion", out: str | None = None, user: str | None = None,
        group: str | None = None, top_n: int | None = None, threshold: float | None = None) -> dict[str, Any]:
    """Batch tagging (e.g. on a schedule over an incoming folder): a registered model's
    predictions for audio files, to Parquet.

    Args:
        paths: Audio files or folders.
        settings: chorus settings laid over those of the process running the flow.
        model: The model: models:/NAME@ALIAS, models:/NAME/VERSION or NAME (with alias); empty: the style model.
        alias: Alias or version of the model where `model` names none.
        out: Parquet file to write; empty: under <state>/tags/.
        user: A listener's user id: the personalised mood model's moods as they hear each file.
        group: Or a group, attribute=value (e.g. culture=culture_a).
        top_n: Labels per file: a tagger's strongest N, a single-label model's best N; empty: 5 and 1.
        threshold: Multi-label score a label needs; empty: 0.5 (a pretrained tagger: none).
    """
    settings = resolve(settings)
    confine_inputs(paths)
    name, version_or_alias = registry.parse_model_ref(model, alias) if model else (None, alias)
    return limited(tag_tasks.tag, task_seconds(settings))(settings, paths, name, str(version_or_alias), out, user, group,
                                                          top_n, threshold)
