"""The candidates of every task (docs/method.md, "Models and baselines"), one line each, and the
entry points that train them and key their results. A candidate is data (``CandidateSpec``)
naming its family; ``train_candidate`` hands it to that family. Tasks: ``style`` (single-label,
the tracks column ``train.task``), ``mood`` (multi-label, the 12 moods of the global voted
labels), ``hash`` (k-bit codes, relevance = same style), ``tags`` (a pretrained tagger's own
vocabulary) and the backbone's ``pretext`` task. docs/pipeline.md, "Adding a model family",
shows how a family is added."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from chorus.config import FeatureSettings, TrainSettings
from chorus.families import backbone, convnets, crnnh, crnnh_musicnn, musicnn_transfer, paper_cnn, pretrained_tagger, sklearn_models, transfer
from chorus.families.base import CandidateSpec, Trained, TrainingJob, family_of, key_definition
from chorus.families.network import NetworkFamily
from chorus.families.targets import TaskTargets
from chorus.features import FeatureSet
from chorus.pretrained.frontend import musicnn_features
from chorus.training import SegmentSplit

PAPER_CNN, SHORT_CHUNK, CRNN = paper_cnn.FAMILY.name, convnets.SHORT_CHUNK.name, convnets.CRNN_FAMILY.name
TRANSFER, CRNNH, BACKBONE_FAMILY = transfer.FAMILY.name, crnnh.FAMILY.name, backbone.FAMILY.name
CRNNH_MUSICNN = crnnh_musicnn.FAMILY.name
SKLEARN, MUSICNN_TRANSFER, PRETRAINED = sklearn_models.FAMILY.name, musicnn_transfer.FAMILY.name, pretrained_tagger.FAMILY.name

BACKBONE = CandidateSpec("backbone", "pretext", BACKBONE_FAMILY, arch="pretext")

CATALOGUE: dict[str, CandidateSpec] = {spec.name: spec for spec in [
    CandidateSpec("paper_cnn", "style", PAPER_CNN, arch="paper_cnn", maps="logmel"),
    CandidateSpec("paper_cnn_3ch", "style", PAPER_CNN, arch="paper_cnn", maps="all"),
    CandidateSpec("short_chunk", "style", SHORT_CHUNK, arch="short_chunk", maps="all"),
    CandidateSpec("short_chunk_logmel", "style", SHORT_CHUNK, arch="short_chunk", maps="logmel"),
    CandidateSpec("short_chunk_res", "style", SHORT_CHUNK, arch="short_chunk", maps="all", residual=True),
    CandidateSpec("crnn", "style", CRNN, arch="crnn", maps="all"),
    CandidateSpec("transfer_frozen", "style", TRANSFER, arch="transfer", freeze=True, needs=("backbone",)),
    CandidateSpec("transfer_finetune", "style", TRANSFER, arch="transfer", freeze=False, needs=("backbone",)),
    CandidateSpec("mood_tagger", "mood", SHORT_CHUNK, arch="short_chunk", maps="all"),
    *[CandidateSpec(f"crnnh_{b}", "hash", CRNNH, arch="crnnh", bits=b, needs=("backbone",)) for b in (16, 32, 64)],
    CandidateSpec("mfcc_svm_pso", "style", SKLEARN, features="mfcc", search="pso"),
    CandidateSpec("mfcc_svm_optuna", "style", SKLEARN, features="mfcc", search="optuna"),
    CandidateSpec("mfcc_svm_grid", "style", SKLEARN, features="mfcc", search="grid"),
    CandidateSpec("cnn_svm", "style", SKLEARN, features="paper_cnn", needs=("paper_cnn",)),
    CandidateSpec("cnn_smote_svm", "style", SKLEARN, features="paper_cnn", smote=True, needs=("paper_cnn",)),
    CandidateSpec("cnn_elm", "style", SKLEARN, features="paper_cnn", classifier="elm", needs=("paper_cnn",)),
    CandidateSpec("rakel", "mood", SKLEARN, features="backbone", classifier="rakel", needs=("backbone",)),
    *[CandidateSpec(f"musicnn_{d.lower()}", "tags", PRETRAINED, arch=f"{d}_musicnn", feature_config="musicnn")
      for d in ("MSD", "MTT")],
    CandidateSpec("musicnn_probe", "style", SKLEARN, features="musicnn_msd", classifier="logistic", needs=("musicnn_msd",),
                  feature_config="musicnn"),
    CandidateSpec("musicnn_mood_probe", "mood", SKLEARN, features="musicnn_msd", classifier="logistic",
                  needs=("musicnn_msd",), feature_config="musicnn"),
    CandidateSpec("musicnn_hash_32", "hash", SKLEARN, features="musicnn_msd", classifier="itq", bits=32,
                  needs=("musicnn_msd",), feature_config="musicnn"),
    CandidateSpec("crnnh_musicnn_32", "hash", CRNNH_MUSICNN, arch="crnnh_musicnn", bits=32, needs=("musicnn_msd",),
                  feature_config="musicnn"),
    CandidateSpec("musicnn_finetune", "style", MUSICNN_TRANSFER, arch="musicnn_finetune", freeze=False,
                  needs=("musicnn_msd",), feature_config="musicnn"),
    BACKBONE,
]}


def register_candidate(spec: CandidateSpec) -> CandidateSpec:
    """Adds a candidate to the catalogue (its family must be registered; its name must be new).

    Parameters
    ----------
    spec : CandidateSpec

    Returns
    -------
    CandidateSpec
        ``spec``, now trainable by name (``chorus train --candidate NAME``).

    Examples
    --------
    >>> from dataclasses import replace
    >>> spec = register_candidate(replace(CATALOGUE["mfcc_svm_grid"], name="mfcc_svm_grid_copy"))
    >>> CATALOGUE["mfcc_svm_grid_copy"] is spec
    True
    >>> del CATALOGUE["mfcc_svm_grid_copy"]
    """
    family_of(spec)
    if spec.name in CATALOGUE and CATALOGUE[spec.name] != spec:
        raise ValueError(f"a different candidate named {spec.name!r} is already in the catalogue")
    CATALOGUE[spec.name] = spec
    return spec


def candidate_features(spec: CandidateSpec, features: FeatureSettings) -> FeatureSettings:
    """The feature configuration a candidate reads: the main one, or musicnn's input.

    Parameters
    ----------
    spec : CandidateSpec
    features : FeatureSettings
        The main feature configuration.

    Returns
    -------
    FeatureSettings
        ``features`` itself, or musicnn's input (16 kHz, 96 bands, 187-frame patches).

    Examples
    --------
    >>> from chorus.config import FeatureSettings
    >>> candidate_features(CATALOGUE["musicnn_probe"], FeatureSettings()).n_mels
    96
    >>> candidate_features(CATALOGUE["short_chunk"], FeatureSettings()).n_mels
    128
    """
    return musicnn_features(features) if spec.feature_config == "musicnn" else features


def resolve_candidates(names: tuple[str, ...] | list[str]) -> list[CandidateSpec]:
    """The named candidates and what they need, dependencies first, each once.

    Parameters
    ----------
    names : sequence of str
        Catalogue names (``chorus candidates`` lists them).

    Returns
    -------
    list of CandidateSpec
        In training order: a candidate after every one it builds on.

    Raises
    ------
    ValueError
        For a name the catalogue does not hold.

    Examples
    --------
    >>> [spec.name for spec in resolve_candidates(["musicnn_probe", "short_chunk"])]
    ['musicnn_msd', 'musicnn_probe', 'short_chunk']
    """
    unknown = [n for n in names if n not in CATALOGUE]
    if unknown:
        raise ValueError(f"unknown candidate(s) {unknown}; known: {sorted(CATALOGUE)}")
    ordered: list[CandidateSpec] = []

    def add(name: str) -> None:
        spec = CATALOGUE[name]
        for need in spec.needs:
            add(need)
        if spec not in ordered:
            ordered.append(spec)

    for name in names:
        add(name)
    return ordered


def build_network(spec: CandidateSpec, settings: TrainSettings, n_out: int, in_channels: int,
                  deps: dict[str, Any], train: SegmentSplit | None = None,
                  head_sizes: list[int] | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The network of a network candidate, freshly initialised from ``settings.seed``
    (``head_sizes``: the pretext heads' class counts)."""
    family = family_of(spec)
    if not isinstance(family, NetworkFamily):
        raise ValueError(f"{spec.name}: family {family.name!r} builds no network")
    return family.network(spec, settings, n_out, in_channels, deps, train, head_sizes)


def train_candidate(
    spec: CandidateSpec,
    features: FeatureSet,
    feature_settings: FeatureSettings,
    targets: TaskTargets,
    settings: TrainSettings,
    deps: dict[str, Any] | None = None,
    checkpoint: Path | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    pretrained_dir: Path | None = None,
) -> Trained:
    """Trains ``spec`` by its family on the train split (choosing on valid) of ``features``.

    Parameters
    ----------
    spec : CandidateSpec
    features : FeatureSet
        Stored segments (maps of shape (segments, n_mels, frames)) of the corpus's tracks.
    feature_settings : FeatureSettings
        The configuration ``features`` was extracted with (``candidate_features``).
    targets : TaskTargets
        Per split, track -> target (``task_targets``); the test split is never read here.
    settings : TrainSettings
    deps : dict of str to Scorer, optional
        The trained scorers of the candidates ``spec.needs``.
    checkpoint : Path, optional
        Per-epoch checkpoint to resume from and write to.
    on_epoch : callable, optional
        Called with each epoch's row (loss, validation score, samples per second).
    pretrained_dir : Path, optional
        Converted pretrained weights (musicnn).

    Returns
    -------
    Trained
        The scorer, its epoch history, its parameters and a summary (validation score, seconds).
    """
    job = TrainingJob(features, feature_settings, targets, settings, deps or {}, checkpoint, on_epoch, pretrained_dir)
    return family_of(spec).train(spec, job)


def key_settings(spec: CandidateSpec, settings: TrainSettings) -> dict[str, Any]:
    """The settings a candidate's result depends on (so changing the SVM search budget does not
    retrain the CNNs, and choosing other candidates retrains nothing)."""
    family = family_of(spec)
    if not family.learns_from_corpus:
        return {"spec": key_definition(spec), **family.key_settings(spec, settings)}
    chosen = family.key_settings(spec, settings)
    if spec.task == "mood":
        chosen["mood_task"] = settings.mood_task
    return {"spec": key_definition(spec), "settings": chosen}


__all__ = ["BACKBONE", "CATALOGUE", "build_network", "candidate_features", "key_settings",
           "register_candidate", "resolve_candidates", "train_candidate"]
