from __future__ import annotations

from typing import Any

from prefect import flow

from chorus.config import ChorusSettings
from flows._common import holding_state, resolve
from tasks import demo as demo_tasks
from tasks import ingest as ingest_tasks


@flow(name="ingest", log_prints=True)
def ingest(settings: ChorusSettings | None = None) -> dict[str, Any]:
    """Build the demo corpus when no corpus is configured, then probe, validate and quarantine."""
    settings = resolve(settings)
    with holding_state(settings):
        summaries: dict[str, Any] = {}
        if settings.ingest.manifest is None:
            summaries["demo"] = demo_tasks.generate_demo(settings)
        summaries["ingest"] = ingest_tasks.ingest(settings)
        return summaries
