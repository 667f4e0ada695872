"""Your own music: ingest a folder of any layout, extract musicnn's input, register the pretrained
taggers, then tag, index and catalogue every track. Nothing is trained."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow

from chorus import stages
from chorus.config import ChorusSettings
from chorus_flows._common import FLOW_OPTIONS, SettingsParameter, confine_inputs, holding_state, resolve
from chorus_flows.features import features
from chorus_tasks import ingest as ingest_tasks
from chorus_tasks import library as library_tasks
from chorus_tasks import train as train_tasks
from chorus_tasks._policies import limited, task_seconds


@flow(name="library", **FLOW_OPTIONS)
def library(folder: str | None = None, settings: ChorusSettings | None = SettingsParameter,
            label_from: Literal["top", "parent", "grandparent", "none"] | None = None) -> dict[str, Any]:
    """A music library under <state_dir>/library: every audio file under `folder` (any layout, any
    format FFmpeg reads) ingested, musicnn's input extracted, the pretrained taggers registered,
    every track tagged and indexed for search, and a catalogue page (tracks, tags, nearest tracks,
    players). Each step skips when its output is current.

    Args:
        folder: The library's root folder; empty: library.folder.
        settings: chorus settings laid over those of the process running the flow.
        label_from: Labels from the folders (top, parent, grandparent) or none; empty: library.label_from.
    """
    settings = resolve(settings, {"library.folder": folder, "library.label_from": label_from})
    own = stages.library_settings(settings)
    with holding_state(settings), holding_state(own):
        summary = {"ingest": limited(ingest_tasks.ingest, task_seconds(own))(own),
                   "features": features(settings=own)}
        results: dict[str, dict[str, Any]] = {}
        for candidate in own.train.selected:
            results.update(limited(train_tasks.train_candidate, task_seconds(own))(own, candidate))
        summary["taggers"] = {name: {k: row.get(k) for k in ("registered", "version", "skipped")}
                              for name, row in results.items()}
        summary["library"] = limited(library_tasks.catalogue, task_seconds(own))(own)
    return summary


@flow(name="library-search", **FLOW_OPTIONS)
def library_search(queries: list[str], settings: ChorusSettings | None = SettingsParameter, k: int = 10,
                   mode: Literal["hash", "semantic", "rerank"] = "semantic", out: str | None = None) -> dict[str, Any]:
    """Similar songs in the library: the nearest library tracks of audio files, by the library
    index (its tagger's embedding; no trained model).

    Args:
        queries: Audio files or folders.
        settings: chorus settings laid over those of the process running the flow.
        k: Neighbours per query.
        mode: semantic (cosine), hash (Hamming on the library's ITQ codes) or rerank.
        out: Parquet file to write; empty: under <state>/library/search/results/.
    """
    own = stages.library_settings(resolve(settings), reading=True)
    confine_inputs(queries)
    return limited(library_tasks.search, task_seconds(own))(own, queries, k, mode, out)


@flow(name="library-tag", **FLOW_OPTIONS)
def library_tag(paths: list[str], settings: ChorusSettings | None = SettingsParameter, out: str | None = None,
                top_n: int | None = None, threshold: float | None = None) -> dict[str, Any]:
    """The library taggers' tags for audio files (pretrained: no training needed).

    Args:
        paths: Audio files or folders.
        settings: chorus settings laid over those of the process running the flow.
        out: Parquet file to write; empty: under <state>/library/tags/.
        top_n: Tags per file and tagger; empty: 5.
        threshold: Score a tag needs; empty: none.
    """
    own = stages.library_settings(resolve(settings), reading=True)
    confine_inputs(paths)
    return limited(library_tasks.tag, task_seconds(own))(own, paths, out, top_n, threshold)
