"""What every flow does first: resolve settings and hold the state directory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from chorus.config import ChorusSettings, load_settings
from chorus.state import StateDir, state_lock


def resolve(settings: ChorusSettings | None) -> ChorusSettings:
    return (settings or load_settings()).resolved()


@contextmanager
def holding_state(settings: ChorusSettings) -> Iterator[StateDir]:
    state = StateDir(settings.state_dir).create()
    with state_lock(state, settings.lock_timeout_s):
        yield state
