"""Prefect tasks: thin wrappers over chorus's stage functions adding retries and logging."""
