"""From segments to one semantic vector and one hash code per track, with the registered models
and the same feature code as training (the feature settings each model was trained on)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chorus import registry
from chorus.audio import AudioProblem
from chorus.config import FeatureSettings
from chorus.errors import InputError, StaleFeaturesError
from chorus.features import extract_track
from chorus.search.codes import pack_codes
from chorus.search.index import unit_rows
from chorus.tagging import model_feature_settings
from chorus.training import track_mean


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    candidate: str

    def __str__(self) -> str:
        return f"{self.name} v{self.version} ({self.candidate})"


def resolve_version(name: str, alias: str) -> ModelVersion:
    """``alias`` is an alias (champion) or a version number."""
    version = int(alias) if str(alias).isdigit() else registry.alias_version(name, alias)
    if version is None:
        raise InputError(f"models:/{name}@{alias}", "no such alias: train and promote the model first (chorus run)")
    return ModelVersion(name, version, registry.version_tags(name, version).get(registry.CANDIDATE_TAG, "?"))


class TrackEncoder:
    """A semantic model (its penultimate layer) and a hash model (+-1 codes). A track's vector is
    the normalised mean of its segments' unit vectors; its code, the sign of the mean of its
    segments' codes (a majority vote per bit)."""

    def __init__(self, semantic: Any, hasher: Any, features: FeatureSettings, versions: tuple[ModelVersion, ModelVersion]) -> None:
        self.semantic, self.hasher, self.features, self.versions = semantic, hasher, features, versions
        for scorer in (semantic, hasher):
            scorer.contract.check_features(features.config_hash())
        self.maps = tuple(dict.fromkeys([*semantic.contract.stored_maps, *hasher.contract.stored_maps]))

    @classmethod
    def from_registry(cls, semantic: ModelVersion, hashing: ModelVersion) -> TrackEncoder:
        features = model_feature_settings(semantic.name, semantic.version)
        other = model_feature_settings(hashing.name, hashing.version)
        if other.config_hash() != features.config_hash():
            raise StaleFeaturesError(f"{semantic} and {hashing} were trained on different features "
                                     f"({features.config_hash()} vs {other.config_hash()}); an index needs both on one")
        return cls(registry.load_scorer(semantic.name, semantic.version), registry.load_scorer(hashing.name, hashing.version),
                   features, (semantic, hashing))

    def segment_outputs(self, maps: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Unit semantic vectors and +-1 codes of segments (``maps``: name -> (n, bands, frames))."""
        def stacked(scorer: Any) -> np.ndarray:
            return np.stack([maps[m] for m in scorer.contract.stored_maps], axis=1)

        return unit_rows(self.semantic.embed(stacked(self.semantic))), np.asarray(self.hasher.scores(stacked(self.hasher)))

    def encode_segments(self, maps: dict[str, np.ndarray], track_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per track: the mean of its segments' unit vectors, normalised, and the majority sign of
        its segments' codes.

        Parameters
        ----------
        maps : name -> np.ndarray, shape (n, n_mels, segment_frames); the stored maps of n segments
        track_ids : np.ndarray, shape (n,); each segment's track

        Returns
        -------
        ids : np.ndarray, shape (t,); the tracks, sorted
        vectors : np.ndarray, shape (t, dims), float32, unit rows
        codes : np.ndarray, shape (t, bits), float32 of +-1
        """
        vectors, codes = self.segment_outputs(maps)
        ids, mean_vectors = track_mean(vectors, track_ids)
        _, mean_codes = track_mean(codes, track_ids)
        return ids, unit_rows(mean_vectors), np.where(mean_codes >= 0, 1.0, -1.0).astype(np.float32)

    def encode_track(self, maps: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One track's unit vector and packed code, from all its segments."""
        n = len(next(iter(maps.values())))
        _, vectors, codes = self.encode_segments(maps, np.zeros(n, np.int64))
        return vectors[0], pack_codes(codes)[0]

    def encode_file(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        try:
            item = extract_track(path.stem, str(path), self.features)
        except AudioProblem as exc:
            raise InputError(str(path), exc.reason, exc.detail) from exc
        return self.encode_track(item.maps)
