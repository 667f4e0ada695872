from __future__ import annotations

import json
from typing import Any

from prefect import flow

from chorus.config import ChorusSettings
from chorus_flows._common import FLOW_OPTIONS, SettingsParameter, holding_state, publish_artifacts, resolve, send_notification
from chorus_tasks import drift as drift_tasks
from chorus_tasks._policies import limited, task_seconds


@flow(name="drift", **FLOW_OPTIONS)
def drift(settings: ChorusSettings | None = SettingsParameter, paths: list[str] | None = None) -> dict[str, Any]:
    """Does new audio still look like what the champion learned from? Compares the batch with the
    champion's training tracks; tells orchestration.notification_block when it drifts.

    Args:
        settings: chorus settings laid over those of the process running the flow.
        paths: Audio files or folders to compare; empty: the tracks the last ingest added.
    """
    settings = resolve(settings)
    with holding_state(settings):
        summary = limited(drift_tasks.drift_watch, task_seconds(settings))(settings, paths)
    counts = summary["counts"]
    if summary["skipped"]:
        return summary
    verdict = "DRIFT" if counts["alarm"] else "no drift"
    lines = [f"# Drift watch: {verdict} ({counts['drifted_share']:.0%} of tests reject)", "",
             f"Batch: {counts['batch']} ({counts['batch_tracks']} tracks) against {counts['reference_tracks']} "
             "training tracks of the champion.", "", f"Report: `{summary['outputs']['report']}`"]
    publish_artifacts("drift", "\n".join(lines), [{"drifted": name} for name in counts["drifted"]])
    if counts["alarm"]:
        summary["notified"] = send_notification(settings, f"chorus: drift in {counts['batch']}",
                                                json.dumps(counts, indent=1, default=str))
    return summary
