from __future__ import annotations

from typing import Any

from prefect import flow

from chorus.config import ChorusSettings
from chorus_flows._common import FLOW_OPTIONS, SettingsParameter, holding_state, resolve
from chorus_tasks import demo as demo_tasks
from chorus_tasks import ingest as ingest_tasks
from chorus_tasks._policies import limited, task_seconds


@flow(name="ingest", **FLOW_OPTIONS)
def ingest(settings: ChorusSettings | None = SettingsParameter, demo_scale: float | None = None,
           manifest: str | None = None) -> dict[str, Any]:
    """Build the demo corpus when no corpus is configured, then probe, validate and quarantine.

    Args:
        settings: chorus settings laid over those of the process running the flow.
        demo_scale: Size of the demo corpus (tracks per style and users are multiplied by it); empty: demo.scale.
        manifest: A corpus to ingest instead of the demo: manifest file or folder-per-label root; empty: ingest.manifest.
    """
    settings = resolve(settings, {"demo.scale": demo_scale, "ingest.manifest": manifest})
    with holding_state(settings):
        summaries: dict[str, Any] = {}
        if settings.ingest.manifest is None:
            summaries["demo"] = limited(demo_tasks.generate_demo, task_seconds(settings))(settings)
        summaries["ingest"] = limited(ingest_tasks.ingest, task_seconds(settings))(settings)
        return summaries
