"""The whole pipeline: ingest -> features + labels + melody -> drift -> pretrain -> train + personal -> promote -> index -> evaluate."""

from __future__ import annotations

import time
from typing import Any, Literal

from prefect import flow

from chorus.compute import release_freed_memory
from chorus.config import ChorusSettings
from chorus.families import resolve_candidates
from chorus.stages import social_data_present
from chorus_flows._common import FLOW_OPTIONS, SettingsParameter, holding_state, resolve
from chorus_flows.drift import drift
from chorus_flows.evaluate import evaluate
from chorus_flows.features import features
from chorus_flows.ingest import ingest
from chorus_flows.labels import labels
from chorus_flows.melody import melody
from chorus_flows.personal import personal
from chorus_flows.promote import promote
from chorus_flows.search import index
from chorus_flows.train import pretrain, train

Stage = Literal["ingest", "features", "labels", "melody", "drift", "pretrain", "train", "personal", "promote", "index",
                "evaluate"]
STAGES: tuple[Stage, ...] = ("ingest", "features", "labels", "melody", "drift", "pretrain", "train", "personal", "promote",
                             "index", "evaluate")
# The two scheduled halves: data (nightly: the new batch checked against the champion) and models (weekly).
REFRESH: tuple[Stage, ...] = ("ingest", "features", "labels", "melody", "drift")
RETRAIN: tuple[Stage, ...] = ("pretrain", "train", "personal", "promote", "index", "evaluate")


@flow(name="pipeline", **FLOW_OPTIONS)
def pipeline(settings: ChorusSettings | None = SettingsParameter, stages: list[Stage] | None = None,
             demo_scale: float | None = None, epochs: int | None = None, trigger: str = "pipeline") -> dict[str, Any]:
    """Every stage in order, each a subflow; unchanged stages find their outputs and skip.

    Args:
        settings: chorus settings laid over those of the process running the flow.
        stages: Which stages run (in pipeline order); empty: all of them.
        demo_scale: Size of the demo corpus (multiplies tracks per style and users); empty: demo.scale.
        epochs: Training epochs per network; empty: train.epochs.
        trigger: Recorded with promotion decisions (pipeline, schedule, manual).
    """
    settings = resolve(settings, {"demo.scale": demo_scale, "train.epochs": epochs})
    selected = set(stages or STAGES)
    summary: dict[str, Any] = {}
    timings: dict[str, float] = {}

    def timed(name: str, run: Any, *args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        summary[name] = run(settings, *args, **kwargs)
        timings[name] = time.perf_counter() - started
        release_freed_memory()  # what the stage freed goes back to the system before the next one

    with holding_state(settings):
        needs_backbone = any(s.name == "backbone" for s in resolve_candidates(list(settings.train.selected)))
        for name, stage in [("ingest", ingest), ("features", features), ("labels", labels), ("melody", melody),
                            ("drift", drift), ("pretrain", pretrain), ("train", train), ("personal", personal)]:
            if name not in selected or (name == "pretrain" and not needs_backbone):
                continue
            if name in ("melody", "personal") and not getattr(settings, name).enabled:
                summary[name] = {"stage": name, "skipped": True, "outputs": {}, "seconds": 0.0,
                                 "counts": {"reason": f"{name}.enabled is false"}}
                continue
            if name == "labels" and not social_data_present(settings):
                # a corpus without a crowd (a standard dataset): tasks read its own labels
                summary[name] = {"stage": "labels", "skipped": True, "outputs": {}, "seconds": 0.0,
                                 "counts": {"reason": "no social data (ingest.social_dir)"}}
                continue
            timed(name, stage)
        if "promote" in selected:
            timed("promote", promote, trigger=trigger)
        if "index" in selected:
            timed("index", index, if_models=True)
        if "evaluate" in selected:
            trained = summary["train"]["counts"]["candidates"] if "train" in summary else None
            timed("evaluate", evaluate, trained)
    summary["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    print("stage timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    return summary
