"""Settings of the personalised mood model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from chorus.config.sections import SectionSettings


class PersonalSettings(SectionSettings):
    """The personalised mood model (docs/method.md, "Personalised classification")."""

    enabled: bool = Field(True, description="False: the pipeline trains no personalised model.")
    groups: Literal["column", "follow_graph"] = Field(
        "column", description="Listeners' groups: the first of labels.group_by the users table has, or communities of "
                              "the follow graph (label propagation; also where the users table has no group column).")
    dims: int = Field(24, ge=2, description="PCA dimensions of the encoder's embedding the heads read.")
    global_ridge: float = Field(1.0, gt=0)
    group_shrinkage: float = Field(20.0, ge=0, description="Pull of a group head towards the global head.")
    listener_shrinkage: list[float] = Field(default_factory=lambda: [10.0, 100.0, 1000.0],
                                            description="Pulls of a listener's head towards their group's, chosen on "
                                                        "valid listeners' valid songs.")
    min_songs: int = Field(5, ge=1, description="Training pairs a listener needs for a head of their own.")
    batch: int = Field(4096, ge=1, description="Listeners solved at once (memory is bounded by a batch).")
    judged_listeners: int = Field(300, ge=1, description="Listeners sampled for the protocol per split.")
    min_held_out_songs: int = Field(2, ge=1, description="Tagged held-out songs a judged listener needs.")
    bootstrap: int = Field(1000, ge=10)
    seed: int = 0
