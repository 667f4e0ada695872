from __future__ import annotations

from typing import Any

from prefect import flow

from chorus.config import ChorusSettings
from chorus_flows._common import FLOW_OPTIONS, SettingsParameter, holding_state, resolve
from chorus_tasks import personal as personal_tasks
from chorus_tasks._policies import limited, task_seconds


@flow(name="personal", **FLOW_OPTIONS)
def personal(settings: ChorusSettings | None = SettingsParameter) -> dict[str, Any]:
    """The personalised mood model: heads per listener, group and globally on the mood tagger's
    embedding, trained on personal truth, judged by the article's protocol, registered as
    <prefix>-personal-mood.

    Args:
        settings: chorus settings laid over those of the process running the flow.
    """
    settings = resolve(settings)
    with holding_state(settings):
        return limited(personal_tasks.train_personal, task_seconds(settings))(settings)
