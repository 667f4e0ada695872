from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from chorus import stages
from chorus.config import ChorusSettings


@task(name="generate-demo-corpus", cache_policy=NO_CACHE)
def generate_demo(settings: ChorusSettings) -> dict[str, Any]:
    summary = stages.demo_stage(settings).as_dict()
    get_run_logger().info("demo corpus: %s", summary)
    return summary


@task(name="render-pretext-corpus", cache_policy=NO_CACHE)
def generate_pretext_corpus(settings: ChorusSettings) -> dict[str, Any]:
    summary = stages.pretext_corpus_stage(settings).as_dict()
    get_run_logger().info("pretext corpus: %s", summary)
    return summary
