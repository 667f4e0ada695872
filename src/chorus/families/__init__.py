"""Model families as plug-ins: each module defines one family (how its candidates build, train
and key their results) and registers it; ``catalogue`` names the candidates.

Examples
--------
>>> from chorus.families import CATALOGUE, family_of
>>> family_of(CATALOGUE["short_chunk"]).name
'short_chunk'
>>> [spec.name for spec in resolve_candidates(["cnn_elm"])]
['paper_cnn', 'cnn_elm']
"""

from chorus.families.base import (
    FAMILIES,
    CandidateSpec,
    Family,
    TaskFamily,
    TaskTargets,
    Trained,
    TrainingJob,
    family_of,
    register_family,
)
from chorus.families.catalogue import (
    BACKBONE,
    CATALOGUE,
    build_network,
    candidate_features,
    key_settings,
    register_candidate,
    resolve_candidates,
    train_candidate,
)
from chorus.families.network import NetworkFamily
from chorus.families.targets import pretext_columns, task_targets

__all__ = [
    "BACKBONE", "CATALOGUE", "FAMILIES", "CandidateSpec", "Family", "NetworkFamily", "TaskFamily", "TaskTargets", "Trained",
    "TrainingJob", "build_network", "candidate_features", "family_of", "key_settings", "pretext_columns",
    "register_candidate", "register_family", "resolve_candidates", "task_targets", "train_candidate",
]
