"""Settings of a music library run (``chorus run --library DIR``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from chorus.config.sections import SectionSettings


class LibrarySettings(SectionSettings):
    """A user's own music, unlabelled and in any layout: tagged by the pretrained taggers, indexed
    for search by one tagger's embedding, and shown on a catalogue page. Nothing is trained."""

    folder: str | None = Field(None, description="The library's root folder (every audio file at any depth).")
    label_from: Literal["top", "parent", "grandparent", "none"] = Field(
        "none", description="Labels from the folders (see ingest.label_from); the library needs none.")
    taggers: list[str] = Field(default_factory=lambda: ["musicnn_msd", "musicnn_mtt"],
                               description="Pretrained taggers (catalogue candidates) whose tags every track gets.")
    embedding: str = Field("musicnn_msd", description="The tagger whose penultimate layer places tracks for search.")
    top_n: int = Field(5, ge=1, description="Tags shown per track and tagger.")
    neighbours: int = Field(5, ge=1, description="Nearest tracks listed per track on the catalogue page.")
    hash_bits: int = Field(32, ge=8, le=256, multiple_of=8, description="Bits of the library index's codes (ITQ on the embedding).")
    seed: int = 0
