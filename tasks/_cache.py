"""Prefect task caching that never hides the data on disk.

A cache key is the stage's input key (content hashes of its inputs + its settings' hash), and
there is one only while the outputs that key produced are on disk and carry it: a deleted or
stale output gives no key, so the task runs and recomputes. Results persist under PREFECT_HOME,
which chorus keeps in the state directory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chorus.config import ChorusSettings


def while_outputs_current(name: str, current_key: Callable[[ChorusSettings], str | None]) -> Callable[..., str | None]:
    """A ``cache_key_fn``: ``<name>-<key>`` while ``current_key(settings)`` finds current outputs."""

    def cache_key(context: Any, inputs: dict[str, Any]) -> str | None:
        key = current_key(inputs["settings"])
        return f"{name}-{key}" if key else None

    return cache_key
