from __future__ import annotations

from typing import Any

from prefect import flow

from chorus.config import ChorusSettings
from flows._common import holding_state, resolve
from tasks import promote as promote_tasks


@flow(name="promote", log_prints=True)
def promote(settings: ChorusSettings | None = None, dry_run: bool = False, trigger: str = "manual") -> dict[str, Any]:
    """The promotion gate: challenger vs champion on fresh test scores; aliases move on a pass."""
    settings = resolve(settings)
    with holding_state(settings):
        return promote_tasks.promote(settings, dry_run, trigger)
