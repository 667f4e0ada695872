from __future__ import annotations

from typing import Any

from prefect import flow

from chorus.config import ChorusSettings
from chorus_flows._common import FLOW_OPTIONS, SettingsParameter, holding_state, publish_artifacts, resolve
from chorus_tasks import evaluate as evaluate_tasks
from chorus_tasks._policies import limited, task_seconds


@flow(name="evaluate", **FLOW_OPTIONS)
def evaluate(settings: ChorusSettings | None = SettingsParameter, candidates: dict[str, dict[str, Any]] | None = None,
             task: str | None = None) -> dict[str, Any]:
    """Score the candidates of a training (and the champion) on the held-out split; write the report.

    Args:
        settings: chorus settings laid over those of the process running the flow.
        candidates: A training's candidates (the train flow's summary); empty: the registered ones.
        task: A task of the settings' `tasks` to report on instead of the default one.
    """
    settings = resolve(settings)
    settings = settings.for_task(task) if task else settings
    with holding_state(settings):
        summary = limited(evaluate_tasks.evaluate, task_seconds(settings))(settings, candidates)
    counts, outputs = summary["counts"], summary["outputs"]
    headline = next(k for k in counts if k not in ("n", "version", "candidates"))
    lines = [f"# Evaluation: {headline} {counts[headline]} (version {counts['version']}"
             + (f", n = {counts['n']})" if "n" in counts else ", unchanged since the last evaluation)"), "",
             f"Report: `{outputs['report']}`", "", f"Metrics: `{outputs['metrics']}`"]
    publish_artifacts("evaluation", "\n".join(lines),
                      [{"candidate": name, "test": score} for name, score in counts.get("candidates", {}).items()])
    return summary
