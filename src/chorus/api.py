"""chorus from Python: tag, embed and search audio files, find a song by its tune, load a model.

Every function reads the state directory a ``chorus run`` (or ``chorus run --library DIR``) made:
``state_dir`` (default: ``CHORUS_STATE_DIR``, else ``./.chorus``) and its MLflow registry. Files
are decoded by libsndfile or FFmpeg (MP3, M4A/AAC, Opus, Ogg, FLAC, WAV, ...). A file that cannot
be used raises ``chorus.errors.InputError`` naming it and the rule it broke.

Examples
--------
>>> import chorus.api as chorus
>>> tags = chorus.tag(song)                      # the pretrained MSD tagger's strongest tags
>>> len(tags)
5
>>> vector = chorus.embed(song)                  # its penultimate layer, a unit vector
>>> vector.ndim, round(float(vector @ vector), 4)
(1, 1.0)
>>> hits = chorus.search(song, k=2, library=True)
>>> hits.loc[0, "uri"] == song                   # the file itself is its own nearest track
True
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chorus import registry
from chorus.config import ChorusSettings, load_settings
from chorus.errors import InputError

DEFAULT_TAGGER = "models:/chorus-musicnn-msd@champion"  # musicnn's MSD tagger, registered by any chorus run

__all__ = ["DEFAULT_TAGGER", "Model", "embed", "hum", "load_model", "search", "tag"]


def _settings(state_dir: str | Path | None) -> ChorusSettings:
    settings = load_settings(overrides={"state_dir": str(state_dir)} if state_dir is not None else None).resolved()
    from chorus.state import StateDir

    registry.configure(settings.tracking_uri, StateDir(settings.state_dir).mlflow_artifacts,
                       settings.orchestration.service_wait_s)
    return settings


@dataclass
class Model:
    """A registered model loaded for use: its scorer (``chorus.models.scorer``), the feature
    settings it was trained on, and its labels."""

    name: str
    version: int
    scorer: Any
    features: Any

    @property
    def labels(self) -> list[str]:
        return list(self.scorer.contract.labels)

    def segments(self, path: str | Path) -> np.ndarray:
        """The file's segments as the model reads them, shape (segments, maps, n_mels, frames)."""
        from chorus.audio import AudioProblem
        from chorus.features import extract_track

        path = Path(path).expanduser()
        if not path.is_file():
            raise InputError(str(path), "no such audio file")
        try:
            item = extract_track(path.stem, str(path), self.features)
        except AudioProblem as problem:
            raise InputError(str(path), problem.reason, problem.detail) from problem
        return np.stack([item.maps[m] for m in self.scorer.contract.stored_maps], axis=1)

    def scores(self, path: str | Path) -> dict[str, float]:
        """The model's score of every label for the file (mean over its segments)."""
        mean = np.asarray(self.scorer.scores(self.segments(path))).mean(axis=0)
        return dict(zip(self.labels, mean.round(4).tolist(), strict=True))

    def embed(self, path: str | Path) -> np.ndarray:
        """The file's embedding: the mean of its segments' unit penultimate-layer vectors,
        normalised; shape (dims,)."""
        from chorus.search.index import mean_direction

        return mean_direction(self.scorer.embed(self.segments(path)))


def load_model(ref: str = DEFAULT_TAGGER, state_dir: str | Path | None = None) -> Model:
    """A registered model by MLflow's name for it.

    Parameters
    ----------
    ref : str
        ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``NAME@ALIAS``, ``NAME/VERSION`` or ``NAME``
        (its champion).
    state_dir : str or Path, optional
        The state directory whose registry holds it.

    Returns
    -------
    Model
        With ``scores``, ``embed`` and ``labels``.

    Examples
    --------
    >>> model = load_model("models:/chorus-musicnn-mtt@champion")
    >>> len(model.labels), "guitar" in model.labels
    (50, True)
    """
    from chorus.compute import tune_process_allocator
    from chorus.tagging import model_feature_settings

    tune_process_allocator()  # the caller's process embeds: its heap as the CLI's
    settings = _settings(state_dir)
    name, version_or_alias = registry.parse_model_ref(ref)
    version = version_or_alias if isinstance(version_or_alias, int) else registry.alias_version(name, version_or_alias)
    if version is None:
        raise InputError(ref, "no such model in the registry", f"registry {settings.tracking_uri}: run `chorus run` "
                                                               "(or `chorus run --library DIR`) first")
    return Model(name, version, registry.load_scorer(name, version), model_feature_settings(name, version))


def tag(path: str | Path, model: str = DEFAULT_TAGGER, top_n: int | None = None, threshold: float | None = None,
        state_dir: str | Path | None = None) -> dict[str, float]:
    """A file's tags and their scores, strongest first.

    Parameters
    ----------
    path : str or Path
        An audio file.
    model : str
        A registered model (see ``load_model``); default musicnn's MSD tagger.
    top_n : int, optional
        At most this many tags (a pretrained tagger: 5 by default; a single-label model: 1).
    threshold : float, optional
        The score a tag needs (a multi-label model: 0.5 by default; a pretrained tagger: none).
    state_dir : str or Path, optional

    Returns
    -------
    dict[str, float]
        tag -> score, strongest first.

    Examples
    --------
    >>> tags = tag(song, top_n=3)
    >>> len(tags), all(0 <= s <= 1 for s in tags.values())
    (3, True)
    >>> list(tag(song, "models:/chorus-musicnn-mtt@champion", threshold=1.0))
    []
    """
    from chorus.tagging import tag_files

    settings = _settings(state_dir)
    name, version_or_alias = registry.parse_model_ref(model)
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(str(path), "no such audio file")
    row = tag_files([path.resolve()], name, settings.ingest, str(version_or_alias), top_n, threshold).iloc[0]
    if row["problem"]:
        raise InputError(str(path), str(row["problem"]))
    scores = json.loads(row["scores"])
    return {label: round(float(scores[label]), 4) for label in row["labels"]}


def embed(path: str | Path, model: str = DEFAULT_TAGGER, state_dir: str | Path | None = None) -> np.ndarray:
    """A file's embedding by a registered model's penultimate layer, shape (dims,), unit norm.

    Examples
    --------
    >>> round(float(np.linalg.norm(embed(song))), 4)
    1.0
    """
    return load_model(model, state_dir).embed(path)


def search(path: str | Path, k: int = 10, library: bool = False, mode: str | None = None,
           state_dir: str | Path | None = None) -> pd.DataFrame:
    """The nearest tracks of an audio file: in the champions' index, or with ``library`` in the
    music library's (``chorus run --library DIR``; no trained model).

    Returns
    -------
    pd.DataFrame
        One row per hit, best first: rank, track_id, hamming, cosine, and the track's uri (a
        library) or labels (the corpus).

    Examples
    --------
    >>> search(song, k=3, library=True)["rank"].tolist()
    [1, 2, 3]
    """
    from chorus import stages

    settings = _settings(state_dir)
    if library:
        own = stages.library_settings(settings, reading=True)
        summary = stages.library_search_stage(own, [str(path)], k, mode or "semantic")
    else:
        summary = stages.search_stage(settings, [str(path)], k, mode)
    return pd.read_parquet(summary.outputs["results"]).drop(columns=["like"]).reset_index(drop=True)


def hum(path: str | Path, k: int | None = None, state_dir: str | Path | None = None) -> pd.DataFrame:
    """Find a song by its tune: the corpus tracks whose melody contains the one sung, hummed or
    whistled in ``path``, best first (rank, track_id, cost, offset_s, uri). Needs the melody
    index of a ``chorus run`` (a library has none).
    """
    from chorus import stages

    summary = stages.hum_stage(_settings(state_dir), str(path), k)
    return pd.read_parquet(summary.outputs["results"])
