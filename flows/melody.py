from __future__ import annotations

from typing import Any

from prefect import flow

from chorus.config import ChorusSettings
from chorus_flows._common import FLOW_OPTIONS, SettingsParameter, confine_inputs, holding_state, resolve
from chorus_tasks import melody as melody_tasks
from chorus_tasks._policies import limited, task_seconds


@flow(name="melody", **FLOW_OPTIONS)
def melody(settings: ChorusSettings | None = SettingsParameter) -> dict[str, Any]:
    """Notes and melody of every new or changed track (on the features' Dask cluster), the melody
    index for query by humming, and its judging with sung queries.

    Args:
        settings: chorus settings laid over those of the process running the flow.
    """
    settings = resolve(settings)
    with holding_state(settings):
        return limited(melody_tasks.extract_melodies, task_seconds(settings))(settings)


@flow(name="hum", **FLOW_OPTIONS)
def hum(query: str, settings: ChorusSettings | None = SettingsParameter, k: int | None = None,
        out: str | None = None) -> dict[str, Any]:
    """Find a song by its tune: the tracks whose melody contains the one sung, hummed or whistled
    in an audio file. Reads only: it does not wait for a run holding the state directory.

    Args:
        query: An audio file of the sung tune (8-20 s is plenty).
        settings: chorus settings laid over those of the process running the flow.
        k: Matches to return; empty: melody.k.
        out: Parquet file to write; empty: under <state>/search/results/.
    """
    settings = resolve(settings)
    confine_inputs([query])
    return limited(melody_tasks.hum, task_seconds(settings))(settings, query, k, out)
