from __future__ import annotations

from typing import Any

from prefect import flow

from chorus.config import ChorusSettings
from chorus_flows._common import FLOW_OPTIONS, SettingsParameter, holding_state, resolve
from chorus_tasks import labels as label_tasks
from chorus_tasks._policies import limited, task_seconds


@flow(name="labels", **FLOW_OPTIONS)
def labels(settings: ChorusSettings | None = SettingsParameter) -> dict[str, Any]:
    """Mood truth from the crowd's playlist tags: global, group and personal weighted votes, and
    the held-out-tags protocol. Many personal targets fan out over Dask.

    Args:
        settings: chorus settings laid over those of the process running the flow.
    """
    settings = resolve(settings)
    with holding_state(settings):
        return limited(label_tasks.voted_labels, task_seconds(settings))(settings)
