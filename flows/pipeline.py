"""The whole pipeline, as DESIGN.md draws it: ingest -> features + labels -> pretrain -> train -> promote -> index -> evaluate."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow

from chorus.candidates import resolve_candidates
from chorus.stages import social_data_present
from chorus.config import ChorusSettings
from flows._common import holding_state, resolve
from flows.evaluate import evaluate
from flows.features import features
from flows.ingest import ingest
from flows.labels import labels
from flows.promote import promote
from flows.search import index
from flows.train import pretrain, train


@flow(name="pipeline", log_prints=True)
def pipeline(settings: ChorusSettings | None = None) -> dict[str, Any]:
    """Every stage in order, each a subflow; unchanged stages find their outputs and skip."""
    settings = resolve(settings)
    summary: dict[str, Any] = {}
    timings: dict[str, float] = {}
    with holding_state(settings):
        needs_backbone = any(s.name == "backbone" for s in resolve_candidates(list(settings.train.selected)))
        stages = [("ingest", ingest), ("features", features), ("labels", labels)]
        stages += [("pretrain", pretrain)] if needs_backbone else []
        for name, stage in [*stages, ("train", train)]:
            if name == "labels" and not social_data_present(settings):
                # a corpus without a crowd (a standard dataset): tasks read its own labels
                summary[name] = {"stage": "labels", "skipped": True, "outputs": {}, "seconds": 0.0,
                                 "counts": {"reason": "no social data (ingest.social_dir)"}}
                continue
            started = time.perf_counter()
            summary[name] = stage(settings)
            timings[name] = time.perf_counter() - started
        started = time.perf_counter()
        summary["promote"] = promote(settings, trigger="pipeline")
        timings["promote"] = time.perf_counter() - started
        started = time.perf_counter()
        summary["index"] = index(settings, if_models=True)
        timings["index"] = time.perf_counter() - started
        started = time.perf_counter()
        summary["evaluate"] = evaluate(settings, summary["train"]["counts"]["candidates"])
        timings["evaluate"] = time.perf_counter() - started
    summary["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    print("stage timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    return summary
