"""Time limits from the settings, scaled by the work (``orchestration.*_timeout_s``)."""

from __future__ import annotations

import math

from chorus.compute import local_workers
from chorus.config import ChorusSettings


def shard_seconds(settings: ChorusSettings, files: int) -> float:
    """A shard's limit: the per-file allowance once per file each worker extracts in turn, and a
    minute for staging and checks."""
    workers = local_workers(settings.compute)
    return settings.orchestration.file_timeout_s * max(1, math.ceil(files / workers)) + 60.0


def training_seconds(settings: ChorusSettings, epochs: int) -> float:
    """A candidate's limit: the per-epoch allowance for each epoch, and two minutes to register it."""
    return settings.orchestration.epoch_timeout_s * max(1, epochs) + 120.0
