"""Prefect flows: one per stage, and ``pipeline`` composing them (flows/pipeline.py:pipeline)."""
