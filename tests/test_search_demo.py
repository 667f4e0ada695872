"""The behaviour users rely on: on the demo corpus (a third of it, so the suite stays short), a
track queried with a degraded copy of its own audio comes back in the top 10."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from chorus.config import load_settings
from chorus.errors import InputError
from chorus.state import StateDir

pytestmark = pytest.mark.slow


def test_search_finds_demo_tracks_from_degraded_copies(prefect_harness, tmp_path):
    from chorus_flows.pipeline import pipeline

    settings = load_settings(overrides={
        "state_dir": str(tmp_path / "state"),
        "demo": {"tracks_per_style": 10},
        # the hash's backbone learns from this corpus: with 60 tracks, rerank's top 100 Hamming
        # candidates are every track, so the hash's quality does not decide what is asserted here
        "train": {"candidates": ["short_chunk", "crnnh_32"], "backbone": {"corpus": "own", "epochs": 3}},
        "search": {"alias": "challenger"},  # whatever the gate decides, the models this run trained
        "melody": {"enabled": False}, "personal": {"enabled": False},  # not what this test is about
    })
    summary = pipeline(settings=settings)
    index = json.loads((Path(summary["index"]["outputs"]["index"]) / "index.json").read_text())
    check = index["check"]
    assert check["tracks"] == 60 and check["k"] == 10  # chance of a top-10 hit: 10/60
    for mode in ("semantic", "rerank"):
        for degradation, share in check["found_in_top_k"][mode].items():
            assert share >= 0.8, (mode, degradation, check["found_in_top_k"])
    assert index["semantic"]["candidate"] == "short_chunk" and index["hash"]["candidate"] == "crnnh_32"

    # what a caller names is confined: the output under the state directory, audio within ingest's limits
    from chorus import stages

    audio = pd.read_parquet(StateDir(settings.state_dir).tracks)["uri"].iloc[0]
    with pytest.raises(InputError, match="outside where chorus may write"):
        stages.search_stage(settings, [audio], out=str(tmp_path / "hits.parquet"))
    short_limit = settings.model_copy(update={"ingest": settings.ingest.model_copy(update={"max_duration_s": 1.0})})
    with pytest.raises(InputError, match="too_long"):
        stages.search_stage(short_limit, [audio])
