"""Mapping free-text playlist tags onto the 12-mood vocabulary."""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from chorus import MOODS
from chorus.errors import ConfigError


def normalise_tag(tag: str) -> str:
    """NFKC (full-width letters, non-breaking spaces), case-fold, collapse whitespace."""
    text = unicodedata.normalize("NFKC", tag).casefold()
    return " ".join(text.split())


@dataclass
class TagMapper:
    """Maps surface tags to mood indices; counts what it discards."""

    synonyms: dict[str, str]
    discarded: Counter[str] = field(default_factory=Counter)

    @classmethod
    def load(cls, path: Path | None = None) -> TagMapper:
        if path is None:
            text = resources.files("chorus.social").joinpath("synonyms.yaml").read_text()
            source = "synonyms.yaml (bundled)"
        else:
            text, source = Path(path).read_text(), str(path)
        table = yaml.safe_load(text) or {}
        synonyms: dict[str, str] = {}
        for mood, forms in table.items():
            if mood not in MOODS:
                raise ConfigError(f"{source}: '{mood}' is not one of the 12 moods {list(MOODS)}")
            for form in [mood, *(forms or [])]:
                key = normalise_tag(str(form))
                if synonyms.get(key, mood) != mood:
                    raise ConfigError(f"{source}: tag '{form}' maps to both {synonyms[key]} and {mood}")
                synonyms[key] = mood
        return cls(synonyms)

    def mood_of(self, tag: str) -> str | None:
        mood = self.synonyms.get(normalise_tag(tag))
        if mood is None:
            self.discarded[normalise_tag(tag)] += 1
        return mood

    def vector(self, tags: Iterable[str]) -> np.ndarray:
        """12-dim 0/1 vector in MOODS order: (moved, quiet) -> (1,0,1,0,...)."""
        vec = np.zeros(len(MOODS), dtype=np.float32)
        for tag in tags:
            mood = self.mood_of(tag)
            if mood is not None:
                vec[MOODS.index(mood)] = 1.0
        return vec
