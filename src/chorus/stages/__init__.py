"""Each stage's edges: read its inputs from the state directory, decide from the data on disk
whether its output is current, compute with the library, write atomically, report a summary.

One module per stage: ``corpus`` (demo, pretext corpus, ingest), ``features``, ``labels``,
``melody``, ``library`` (a user's own music), ``train`` (and pretrain), ``personal``, ``promote``,
``search`` (index and search), ``evaluate``, ``card``, ``drift``, ``tag``.
Three modules are not stages: ``context`` (``StageContext``), ``inputs`` (what stages read
from each other's outputs: stages import it, never each other) and ``model_card`` (the card
writer the card and evaluate stages share).
Each opens a ``StageContext``, computes its key, skips when its outputs carry that key, and
returns a ``StageSummary``. Prefect-free: ``tasks/`` wraps these with retries and logging,
``flows/`` composes them, and tests call them directly.
"""

from chorus.stages.card import (
    card_stage,
)
from chorus.stages.context import (
    StageContext,
    StageSummary,
    cpu_use,
    git_commit,
    read_metrics,
    shared_validator,
    update_metrics,
)
from chorus.stages.corpus import (
    demo_stage,
    held_out_works,
    ingest_stage,
    pretext_corpus_stage,
)
from chorus.stages.drift import (
    drift_stage,
)
from chorus.stages.evaluate import (
    evaluate_stage,
)
from chorus.stages.features import (
    extract_shard,
    extraction_settings,
    finish_features,
    plan_features,
    shards_in_flight,
)
from chorus.stages.inputs import (
    FeatureSets,
    candidate_key,
    corpus_location,
    current_index_meta,
    features_root,
    library_settings,
    load_tracks,
    mood_labels,
    pretext_settings,
    pretext_tracks,
    registered_version,
    search_models,
    social_data_present,
    social_table_paths,
    train_key,
    training_source,
    training_tracks,
    voted_global_labels,
)
from chorus.stages.labels import (
    current_labels_key,
    forget_user_stage,
    labels_key,
    labels_stage,
    personal_target_count,
    rekey_forgotten_stage,
)
from chorus.stages.library import (
    library_search_stage,
    library_stage,
    library_tag_stage,
)
from chorus.stages.melody import (
    hum_stage,
    load_melody_index,
    melody_stage,
)
from chorus.stages.personal import (
    listener_tag_stage,
    load_personal,
    personal_model_name,
    personal_stage,
)
from chorus.stages.promote import (
    promote_stage,
    rollback_stage,
    score_version,
)
from chorus.stages.search import (
    current_index_key,
    degraded_check,
    index_key,
    index_stage,
    load_index,
    search_stage,
    track_labels,
)
from chorus.stages.tag import (
    tag_stage,
)
from chorus.stages.train import (
    pretrain_stage,
    set_challengers,
    train_stage,
    train_summary,
)

__all__ = [
    "plan_features",
    "library_search_stage",
    "library_settings",
    "library_stage",
    "library_tag_stage",
    "registered_version",
    "listener_tag_stage",
    "candidate_key",
    "card_stage",
    "corpus_location",
    "current_index_key",
    "current_index_meta",
    "current_labels_key",
    "degraded_check",
    "demo_stage",
    "drift_stage",
    "evaluate_stage",
    "extract_shard",
    "extraction_settings",
    "features_root",
    "FeatureSets",
    "finish_features",
    "forget_user_stage",
    "git_commit",
    "held_out_works",
    "hum_stage",
    "index_key",
    "index_stage",
    "ingest_stage",
    "labels_key",
    "labels_stage",
    "load_index",
    "load_melody_index",
    "load_personal",
    "load_tracks",
    "melody_stage",
    "mood_labels",
    "personal_model_name",
    "personal_stage",
    "personal_target_count",
    "pretext_corpus_stage",
    "pretext_settings",
    "pretext_tracks",
    "pretrain_stage",
    "promote_stage",
    "read_metrics",
    "rekey_forgotten_stage",
    "rollback_stage",
    "score_version",
    "search_models",
    "search_stage",
    "set_challengers",
    "shards_in_flight",
    "shared_validator",
    "social_data_present",
    "social_table_paths",
    "StageContext",
    "StageSummary",
    "cpu_use",
    "tag_stage",
    "track_labels",
    "train_key",
    "train_stage",
    "train_summary",
    "training_source",
    "training_tracks",
    "update_metrics",
    "voted_global_labels",
]
