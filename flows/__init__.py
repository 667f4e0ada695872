"""Prefect flows: one per stage, and ``pipeline`` composing them (flows/pipeline.py:pipeline)."""

from chorus_flows._common import local_run

__all__ = ["local_run"]
