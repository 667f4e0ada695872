from __future__ import annotations

from typing import Any

from prefect import flow

from chorus.config import ChorusSettings
from chorus_flows._common import FLOW_OPTIONS, SettingsParameter, holding_state, publish_artifacts, resolve
from chorus_tasks import promote as promote_tasks
from chorus_tasks._policies import limited, task_seconds


@flow(name="promote", **FLOW_OPTIONS)
def promote(settings: ChorusSettings | None = SettingsParameter, dry_run: bool = False,
            trigger: str = "manual") -> dict[str, Any]:
    """The promotion gate: challenger vs champion on fresh test scores; aliases move on a pass.

    Args:
        settings: chorus settings laid over those of the process running the flow.
        dry_run: Decide and audit, move no alias.
        trigger: What asked for this decision; recorded in the audit (manual, pipeline, schedule).
    """
    settings = resolve(settings)
    with holding_state(settings):
        summary = limited(promote_tasks.promote, task_seconds(settings))(settings, dry_run, trigger)
    rows = [{"model": name, "decided": d["decided"], "promoted": bool(d.get("promote")) and not d.get("dry_run"),
             "challenger": d.get("challenger"), "champion_before": d.get("champion"), "reason": d["reason"]}
            for name, d in summary["counts"]["decisions"].items()]
    lines = [f"# Promotion gate: {summary['counts']['promoted']} promoted, {summary['counts']['refused']} refused"
             + (" (dry run)" if dry_run else ""), "",
             *[f"- **{r['model']}**: {r['reason']}" for r in rows], "", f"Audit: `{summary['outputs']['audit']}`"]
    publish_artifacts("promotion", "\n".join(lines), rows)
    return summary
