"""What a model family is: a candidate's definition (``CandidateSpec``, plain data), the result
of training one (``Trained``), what a family is given to train with (``TrainingJob``), and the
``Family`` interface every family module implements. Families are found by name in
``FAMILIES``; ``chorus.families.catalogue`` names the candidates built from them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from chorus.config import FeatureSettings, TrainSettings
from chorus.features import FeatureSet, map_names
from chorus.models.scorer import Contract, SklearnScorer, TorchScorer
from chorus.training import SegmentSplit, segment_split

TaskFamily = Literal["style", "mood", "hash", "pretext", "tags"]
Runtime = Literal["torch", "sklearn", "pretrained"]


@dataclass(frozen=True)
class CandidateSpec:
    """One candidate: a family (``family``, a name in ``FAMILIES``) and the options it reads.
    The fields are the candidate's definition in its training key (``key_definition``)."""

    name: str
    task: TaskFamily
    family: str
    arch: str = ""  # the network or pretrained model the family builds (logged as ``architecture``)
    maps: Literal["logmel", "all"] = "all"
    residual: bool = False
    freeze: bool = True
    bits: int = 0
    features: str = ""  # sklearn: mfcc | paper_cnn | backbone | musicnn_msd
    classifier: str = "svm"  # sklearn: svm | elm | rakel | logistic | itq
    search: str | None = None  # None: train.svm.search
    smote: bool = False
    needs: tuple[str, ...] = ()
    feature_config: Literal["main", "musicnn"] = "main"  # musicnn: the features stage's musicnn_features

    @property
    def kind(self) -> str:
        return {"style": "single", "mood": "multi", "hash": "hash", "pretext": "pretext", "tags": "multi"}[self.task]

    def registered_task(self, settings: TrainSettings) -> str:
        if self.task == "style":
            return settings.task
        if self.task == "mood":
            return settings.mood_task
        if self.task == "hash":
            return f"hash-{self.bits}"
        if self.task == "tags":
            return f"musicnn-{self.arch.split('_')[0].lower()}"
        return "backbone"


@dataclass
class TaskTargets:
    """Per split, track -> target; the output labels; for pretext, the classes of each head."""
    labels: list[str]
    splits: dict[str, dict[str, Any]]
    head_sizes: list[int] = field(default_factory=list)

    def digest_rows(self) -> list[Any]:
        return [[split, t, np.asarray(v).tolist()] for split, d in sorted(self.splits.items()) for t, v in sorted(d.items())]


@dataclass
class Trained:
    scorer: TorchScorer | SklearnScorer
    history: list[dict[str, float]]
    params: dict[str, Any]
    summary: dict[str, Any]


@dataclass
class TrainingJob:
    """Everything a family trains from: the stored features of train and valid tracks, the
    feature settings they were made with, the task's targets, the training settings, the scorers
    of the candidates it ``needs``, a checkpoint path, an epoch callback and the folder of
    converted pretrained weights."""

    features: FeatureSet
    feature_settings: FeatureSettings
    targets: TaskTargets
    settings: TrainSettings
    deps: dict[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None
    on_epoch: Callable[[dict[str, float]], None] | None = None
    pretrained_dir: Path | None = None

    @property
    def stored(self) -> tuple[str, ...]:
        return map_names(self.feature_settings)

    def contract(self, spec: CandidateSpec, labels: list[str] | None = None) -> Contract:
        """The contract every scorer of ``spec`` is registered under."""
        return Contract(spec.registered_task(self.settings), spec.kind,  # type: ignore[arg-type]
                        list(self.targets.labels if labels is None else labels), self.stored,
                        self.features.config_hash, spec.name)

    def splits(self, spec: CandidateSpec) -> tuple[SegmentSplit, SegmentSplit]:
        """The train and valid segments with their targets (the test split is never read here)."""
        train = segment_split(self.features, self.stored, self.targets.splits["train"])
        valid = segment_split(self.features, self.stored, self.targets.splits["valid"])
        if len(train) == 0:
            raise ValueError(f"{spec.name}: no training segments for task {spec.task}")
        return train, valid


class Family(ABC):
    """A model family: how its candidates train and which settings their results depend on.

    A family module defines a subclass and registers one instance with ``register_family``;
    a candidate names it in ``CandidateSpec.family``. ``runtime`` says how the scorer is stored
    (a network as safetensors, an estimator as skops, converted pretrained weights); a network
    class a family builds is registered with ``chorus.models.blueprint.register_network`` so a
    stored model can be rebuilt without unpickling.
    """

    name: ClassVar[str]
    runtime: ClassVar[Runtime]
    learns_from_corpus: ClassVar[bool] = True  # False: the key is the weights and the input, not the corpus

    @abstractmethod
    def train(self, spec: CandidateSpec, job: TrainingJob) -> Trained:
        """The candidate trained on ``job`` (train split; valid chooses), as a registrable scorer."""

    @abstractmethod
    def key_settings(self, spec: CandidateSpec, settings: TrainSettings) -> dict[str, Any]:
        """The training settings a candidate's result depends on (part of its training key)."""


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Adds ``family`` under its name (a second family of the same name is refused)."""
    if family.name in FAMILIES and type(FAMILIES[family.name]) is not type(family):
        raise ValueError(f"a family named {family.name!r} is already registered ({type(FAMILIES[family.name]).__name__})")
    FAMILIES[family.name] = family
    return family


def family_of(spec: CandidateSpec) -> Family:
    """The registered family that builds, trains and keys ``spec``.

    Parameters
    ----------
    spec : CandidateSpec
        A catalogue entry; its ``family`` names the family.

    Returns
    -------
    Family

    Raises
    ------
    ValueError
        When no family of that name is registered (the message lists the known ones).

    Examples
    --------
    >>> from chorus.families import CATALOGUE
    >>> family_of(CATALOGUE["mfcc_svm_pso"]).learns_from_corpus, family_of(CATALOGUE["musicnn_msd"]).learns_from_corpus
    (True, False)
    """
    try:
        return FAMILIES[spec.family]
    except KeyError:
        raise ValueError(f"{spec.name}: unknown family {spec.family!r}; known: {sorted(FAMILIES)}") from None


def key_definition(spec: CandidateSpec) -> dict[str, Any]:
    """The candidate's definition as its training key holds it: the spec's fields, with
    ``family`` as the family's runtime (so keys made before families were modules stay valid)."""
    definition = asdict(spec)
    definition["family"] = family_of(spec).runtime
    if spec.feature_config == "main":  # keys from before the field existed stay valid
        definition.pop("feature_config")
    return definition
