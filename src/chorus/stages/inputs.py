"""What stages read from each other, in one place: typed readers of the state directory beside
``StageContext``. A stage imports this module, never another stage.

- corpus: ``load_tracks``, ``corpus_location``, ``pretext_settings``/``training_source``/``pretext_tracks``
  (the backbone's rendered corpus), ``social_table_paths``/``social_data_present``;
- features: ``features_root``, ``feature_configurations``, ``stored_features_keys``, ``FeatureSets``;
- labels: ``voted_global_labels``, ``training_tracks``, ``mood_labels``;
- models: ``candidate_key``/``train_key`` (the key a candidate's registered version carries);
- search: ``search_models``, ``index_folder``, ``current_index_meta``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from chorus import registry
from chorus.config import ChorusSettings, FeatureSettings, stable_hash
from chorus.errors import ChorusError, InputError
from chorus.families import CATALOGUE, CandidateSpec, TaskTargets, candidate_features, family_of, key_settings, task_targets
from chorus.features import FeatureSet, feature_dir, features_key, load_features, map_names
from chorus.ingest import SOCIAL_TABLES
from chorus.io import file_sha256, read_table
from chorus.label_tasks import MultiLabelTruth, global_voted_labels, multi_label_truth, with_task_labels, with_voted_mood
from chorus.models.persist import FORMAT as STORAGE_FORMAT
from chorus.models.scorer import Contract
from chorus.pretrained.frontend import musicnn_features
from chorus.search.encode import ModelVersion, resolve_version
from chorus.search.index import read_index_meta
from chorus.social.voting import SCORE_COLUMNS
from chorus.state import StateDir
from chorus.tagging import audio_files


def pretext_settings(settings: ChorusSettings) -> ChorusSettings:
    """The settings of the backbone's rendered pretext corpus: a state directory of its own under
    ``<state_dir>/pretext`` (its corpus, tracks table and features, made with the main feature
    configuration), ingested as a demo corpus; models still go to the main registry. Only the
    backbone trains there."""
    state = StateDir(settings.state_dir)
    ingest_settings = settings.ingest.model_copy(update={"manifest": None, "adapter": "demo", "social_dir": None,
                                                         "split_files": None})
    return settings.model_copy(update={"state_dir": state.pretext, "ingest": ingest_settings,
                                       "mlflow_tracking_uri": settings.tracking_uri,
                                       "train": settings.train.model_copy(update={"candidates": ["backbone"]})})


def library_settings(settings: ChorusSettings, reading: bool = False) -> ChorusSettings:
    """The settings of a music library run: a state directory of its own under
    ``<state_dir>/library`` (tracks, features, tags, index, catalogue), ``library.folder`` ingested
    with the folder adapter (labels from ``library.label_from``), musicnn's input as the one feature
    configuration, the library's taggers as the candidates; models go to the main registry.
    ``reading``: for searching or tagging against a library already built (no folder needed)."""
    if not settings.library.folder and not reading:
        raise InputError("library.folder", "no library folder", "chorus run --library DIR")
    state = StateDir(settings.state_dir)
    ingest_settings = settings.ingest.model_copy(update={
        "manifest": str(Path(settings.library.folder).expanduser().resolve()) if settings.library.folder else None,
        "adapter": "folder", "label_from": settings.library.label_from, "social_dir": None, "split_files": None})
    taggers = list(dict.fromkeys([*settings.library.taggers, settings.library.embedding]))
    return settings.model_copy(update={"state_dir": state.library, "ingest": ingest_settings,
                                       "features": musicnn_features(settings.features),
                                       "mlflow_tracking_uri": settings.tracking_uri,
                                       "train": settings.train.model_copy(update={"candidates": taggers})})


def training_source(settings: ChorusSettings, task: str) -> ChorusSettings:
    """Whose state holds a task's training data: the pretext corpus's for the backbone (unless
    ``train.backbone.corpus`` is ``own``), the main corpus's for everything else."""
    if task == "pretext" and settings.train.backbone.corpus == "rendered":
        return pretext_settings(settings)
    return settings


def load_tracks(settings: ChorusSettings) -> pd.DataFrame:
    state = StateDir(settings.state_dir)
    if not state.tracks.exists():
        raise InputError(str(state.tracks), "no tracks table: run `chorus ingest` first")
    return read_table(state.tracks)


def corpus_location(settings: ChorusSettings) -> tuple[Path, Path | None]:
    """(corpus location, social folder): the configured ones or the demo corpus."""
    state = StateDir(settings.state_dir)
    corpus = Path(settings.ingest.manifest) if settings.ingest.manifest else state.demo
    social = Path(settings.ingest.social_dir) if settings.ingest.social_dir else (
        state.demo / "social" if not settings.ingest.manifest else None
    )
    return corpus, social


def pretext_tracks(pretext: ChorusSettings) -> pd.DataFrame:
    """The pretext corpus's tracks table (the backbone's training data)."""
    path = StateDir(pretext.state_dir).tracks
    if not path.exists():
        raise InputError(str(path), "the backbone's pretext corpus is not ingested: run `chorus pretrain` "
                                    "(or set train.backbone.corpus=own)")
    return read_table(path)


def social_table_paths(state: StateDir) -> dict[str, Path]:
    """The validated copies of the social tables under the state directory."""
    return {name: state.social_table(name) for name in SOCIAL_TABLES}


def social_data_present(settings: ChorusSettings) -> bool:
    """Whether ingest stored the crowd's tables (a standard dataset has none)."""
    return all(p.exists() for p in social_table_paths(StateDir(settings.state_dir)).values())


def features_root(settings: ChorusSettings) -> Path:
    return StateDir(settings.state_dir).features


def feature_configurations(settings: FeatureSettings) -> dict[str, FeatureSettings]:
    """Each feature configuration a model may read, by config hash: the main one, musicnn's input."""
    return {fs.config_hash(): fs for fs in (settings, musicnn_features(settings))}


def stored_features_keys(root: Path, settings: FeatureSettings) -> dict[str, str]:
    """The features key of each configuration extracted under ``root`` (by config hash), for the
    keys of outputs built on whichever of them their models read."""
    return {h: features_key(root, fs) for h, fs in feature_configurations(settings).items()
            if (feature_dir(root, fs) / "index.json").exists()}


@dataclass
class FeatureSets:
    """The stored features of ``track_ids`` in each configuration a model may read (the main one,
    musicnn's input), each loaded once, when a model first asks for it."""

    root: Path
    settings: FeatureSettings
    track_ids: list[str]
    loaded: dict[str, FeatureSet] = field(default_factory=dict)

    def of(self, fs: FeatureSettings) -> FeatureSet:
        """The features of one configuration (loaded on first use)."""
        key = fs.config_hash()
        if key not in self.loaded:
            self.loaded[key] = load_features(self.root, fs, self.track_ids, maps=map_names(fs))
        return self.loaded[key]

    def for_contract(self, contract: Contract) -> FeatureSet:
        """The features a model was trained on; an unknown configuration gets the main one, which
        the model's ``check_features`` then refuses with both hashes."""
        return self.of(feature_configurations(self.settings).get(contract.feature_config_hash, self.settings))


def voted_global_labels(settings: ChorusSettings) -> dict[str, list[str]]:
    """track -> the moods the global vote chose ({} before the labels stage has run)."""
    path = StateDir(settings.state_dir).labels_table
    if not path.exists():
        return {}
    return global_voted_labels(read_table(path, columns=["scope", "track_id", "labels"]))


def training_tracks(settings: ChorusSettings) -> pd.DataFrame:
    """The tracks table plus ``voted_mood`` (the top mood of each track's global voted truth, where
    the labels stage has run) and the tasks' labels from annotation files."""
    state = StateDir(settings.state_dir)
    tracks = with_task_labels(load_tracks(settings), settings.tasks, settings.train.split_column, state.tracks)
    if state.labels_table.exists():
        tracks = with_voted_mood(tracks, read_table(state.labels_table, columns=["scope", "track_id", *SCORE_COLUMNS]))
    return tracks


def mood_labels(settings: ChorusSettings, tracks: pd.DataFrame) -> MultiLabelTruth:
    """The multi-label task's truth (``train.mood_task``): the global vote's moods by default, or a
    column of ``tracks`` (see ``chorus.label_tasks.multi_label_truth``)."""
    task = settings.multi_task()
    voted = voted_global_labels(settings) if task.source == "voted" else {}
    return multi_label_truth(task, settings.train.mood_task, tracks, voted, StateDir(settings.state_dir).tracks)


def candidate_key(settings: ChorusSettings, spec: CandidateSpec, targets: TaskTargets, dep_keys: dict[str, str]) -> str:
    """What a candidate's training depends on: its definition, the settings it reads, the
    features, its targets, and the keys of the models it builds on."""
    source = training_source(settings, spec.task)
    feature_settings = candidate_features(spec, settings.features)
    # a model registered in another storage format is trained and registered again
    if not family_of(spec).learns_from_corpus:  # nothing learnt from the corpus: the weights and the input they read
        return stable_hash({"candidate": key_settings(spec, settings.train), "features": feature_settings.config_hash(),
                            "stored_as": STORAGE_FORMAT})
    return stable_hash({
        "candidate": key_settings(spec, settings.train),
        "stored_as": STORAGE_FORMAT,
        "features": features_key(features_root(source), feature_settings),
        "targets": stable_hash(targets.digest_rows()),
        "deps": dep_keys,
    })


def registered_version(settings: ChorusSettings, candidate: str) -> registry.ModelRef | None:
    """The registered version of a candidate that learns nothing from the corpus (a pretrained
    tagger), found by its key; None before the train stage has registered it."""
    spec = CATALOGUE[candidate]
    if family_of(spec).learns_from_corpus:
        raise ValueError(f"{candidate} learns from the corpus: its key needs the corpus's targets (train_key)")
    name = settings.train.registered_name(spec.registered_task(settings.train))
    return registry.find_version(name, candidate_key(settings, spec, TaskTargets([], {}), {}))


def train_key(settings: ChorusSettings, tracks: pd.DataFrame, candidate: str = "short_chunk") -> str:
    """The cache key of one candidate (default: the short-chunk CNN) on these tracks."""
    spec = CATALOGUE[candidate]
    return candidate_key(settings, spec, task_targets(spec.task, tracks, settings.train, mood_labels(settings, tracks)), {})


def search_models(settings: ChorusSettings) -> tuple[ModelVersion, ModelVersion]:
    """The two registered versions an index is built for: the semantic model's and the hash
    model's, at ``search.alias`` (champion by default)."""
    ts, alias = settings.train, settings.search.alias
    hashing = resolve_version(ts.registered_name(f"hash-{settings.search.hash_bits}"), alias)
    semantic = resolve_version(settings.search.semantic_model or ts.model_name, alias)
    hash_features = _feature_config(hashing)
    if not settings.search.semantic_model and _feature_config(semantic) != hash_features and \
            hash_features == musicnn_features(settings.features).config_hash():
        # a hash of musicnn's embeddings pairs with musicnn's own vectors (one feature set per index)
        semantic = resolve_version(ts.registered_name(CATALOGUE["musicnn_msd"].registered_task(ts)), "champion")
    return semantic, hashing


def _feature_config(version: ModelVersion) -> str | None:
    return registry.version_tags(version.name, version.version).get(registry.FEATURE_HASH_TAG)


def index_folder(state: StateDir, semantic: ModelVersion, hashing: ModelVersion) -> Path:
    return state.search / f"{semantic.name}-v{semantic.version}+{hashing.name}-v{hashing.version}"


def current_index_meta(settings: ChorusSettings) -> dict[str, Any] | None:
    """What the index of the models now at ``search.alias`` records (versions, check), if built."""
    try:
        semantic, hashing = search_models(settings)
    except ChorusError:
        return None
    return read_index_meta(index_folder(StateDir(settings.state_dir), semantic, hashing))


def audio_inputs(paths: list[str]) -> tuple[list[Path], str]:
    """The audio files named, and those under the folders named (sorted, each once), with a digest
    of their paths and contents for the name of an output made from them; InputError when none."""
    files = audio_files([Path(p).expanduser() for p in paths])
    if not files:
        raise InputError(", ".join(paths), "no audio files found")
    return files, stable_hash([[str(f), file_sha256(f)] for f in files])
