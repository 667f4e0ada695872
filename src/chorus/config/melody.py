"""Settings of the melody stage and index (query by humming)."""

from __future__ import annotations

from pydantic import Field

from chorus.config.sections import SectionSettings


class MelodySettings(SectionSettings):
    """Notes and melody per track (basic-pitch's note model), the melody index and its judging
    queries. docs/pipeline.md, "Find a song by its tune", describes each."""

    _runtime_fields = frozenset({"k"})

    enabled: bool = Field(True, description="False: the pipeline skips the melody stage.")
    min_amplitude: float = Field(0.35, ge=0, le=1, description="Notes with a lower mean activation are not melody.")
    min_notes: int = Field(3, ge=2, description="A track whose melody has fewer notes is quarantined (no melody found).")
    query_notes: int = Field(8, ge=3, description="Notes a judging query sings at least (tracks with fewer are not sung).")
    window: int = Field(4, ge=2, description="Intervals per indexed window (the approximate stage).")
    neighbours: int = Field(128, ge=1, description="Catalogue windows found per query window.")
    approximate_above: int = Field(200_000, ge=0, description="Above this many windows the index is an inverted file "
                                                               "(IVF) instead of an exact flat one.")
    ivf_probe: int = Field(24, ge=1, description="IVF cells visited per query window.")
    shortlist: int = Field(50, ge=1, description="Tracks the alignment reranks.")
    exhaustive_below: int = Field(300, ge=0, description="Catalogues of fewer tracks are aligned in full, no shortlist.")
    rhythm_weight: float = Field(0.35, ge=0, description="Weight of inter-onset ratios against intervals.")
    interval_cap: float = Field(3.0, gt=0, description="Semitones beyond which an interval mismatch costs no more.")
    rhythm_cap: float = Field(1.5, gt=0, description="log2 ratio beyond which a rhythm mismatch costs no more.")
    skip_cost: float = Field(0.35, ge=0, description="What the alignment pays per note it steps over (either side).")
    max_skip: int = Field(2, ge=0, description="Notes one alignment step may step over on either side.")
    k: int = Field(10, ge=1, description="Matches `chorus hum` prints.")
    shard_tracks: int = Field(24, ge=1, description="Tracks per Dask task of the melody stage.")
    query_split: str = Field("test", description="Split whose tracks the judging queries are sung from (never "
                                                 "chosen on: the index has no parameters fit on queries).")
    query_levels: list[str] = Field(default_factory=lambda: ["clean", "wrong10"],
                                    description="Distortion levels of the judging queries (chorus.melody.synth.LEVELS).")
    queries_per_track: int = Field(2, ge=1, description="Excerpts sung per query track and level.")
    query_seconds: tuple[float, float] = Field((8.0, 20.0), description="Length range of a judging query.")
    query_seed: int = 0
    bootstrap_rounds: int = Field(1000, ge=10)
