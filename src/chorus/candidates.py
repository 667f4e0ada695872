"""The candidates of every task (docs/method.md, "Models and baselines") and how each one is trained from stored
features and labels. A candidate is data (``CandidateSpec``); ``train_candidate`` turns it into a
scorer. Tasks: ``style`` (single-label, the tracks column ``train.task``), ``mood`` (multi-label,
the 12 moods of the global voted labels), ``hash`` (k-bit codes, relevance = same style) and the
backbone's ``pretext`` task."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from chorus import baselines
from chorus.config import FeatureSettings, TrainSettings
from chorus.datasets.render import instrument_family
from chorus.evaluation.retrieval import average_precision_at_k, hamming_distance, top_k
from chorus.features import FeatureSet, map_names
from chorus.label_tasks import MultiLabelTruth
from chorus.models.nets import (
    CRNN,
    CRNNH,
    PaperCNN,
    PretextCNN,
    ShortChunkCNN,
    TransferCNN,
    select_maps_by_variance,
)
from chorus.models.scorer import (
    Contract,
    EmbeddingFeaturiser,
    MfccFeaturiser,
    SklearnScorer,
    TorchScorer,
)
from chorus.pretrained.frontend import musicnn_features
from chorus.pretrained.musicnn import TAGS
from chorus.pretrained.tagger import PretrainedTagger
from chorus.pretrained.weights import MUSICNN_WHEEL, load_pretrained
from chorus.training import (
    HeadSpec,
    SegmentSplit,
    fit,
    segment_split,
    track_level_score,
    track_mean,
    track_targets,
)

TaskFamily = Literal["style", "mood", "hash", "pretext", "tags"]


@dataclass(frozen=True)
class CandidateSpec:
    name: str
    task: TaskFamily
    family: Literal["torch", "sklearn", "pretrained"]
    arch: str = ""  # torch: paper_cnn | short_chunk | crnn | transfer | crnnh | pretext; pretrained: MSD_musicnn | MTT_musicnn
    maps: Literal["logmel", "all"] = "all"
    residual: bool = False
    freeze: bool = True
    bits: int = 0
    features: str = ""  # sklearn: mfcc | paper_cnn | backbone | musicnn_msd
    classifier: str = "svm"  # sklearn: svm | elm | rakel | logistic
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


BACKBONE = CandidateSpec("backbone", "pretext", "torch", arch="pretext")
FINETUNE_LR_SCALE = 0.1  # a pretrained network's layers move less than a fresh one's

CATALOGUE: dict[str, CandidateSpec] = {spec.name: spec for spec in [
    CandidateSpec("paper_cnn", "style", "torch", arch="paper_cnn", maps="logmel"),
    CandidateSpec("paper_cnn_3ch", "style", "torch", arch="paper_cnn", maps="all"),
    CandidateSpec("short_chunk", "style", "torch", arch="short_chunk", maps="all"),
    CandidateSpec("short_chunk_logmel", "style", "torch", arch="short_chunk", maps="logmel"),
    CandidateSpec("short_chunk_res", "style", "torch", arch="short_chunk", maps="all", residual=True),
    CandidateSpec("crnn", "style", "torch", arch="crnn", maps="all"),
    CandidateSpec("transfer_frozen", "style", "torch", arch="transfer", freeze=True, needs=("backbone",)),
    CandidateSpec("transfer_finetune", "style", "torch", arch="transfer", freeze=False, needs=("backbone",)),
    CandidateSpec("mood_tagger", "mood", "torch", arch="short_chunk", maps="all"),
    *[CandidateSpec(f"crnnh_{b}", "hash", "torch", arch="crnnh", bits=b, needs=("backbone",)) for b in (16, 32, 64)],
    CandidateSpec("mfcc_svm_pso", "style", "sklearn", features="mfcc", search="pso"),
    CandidateSpec("mfcc_svm_optuna", "style", "sklearn", features="mfcc", search="optuna"),
    CandidateSpec("mfcc_svm_grid", "style", "sklearn", features="mfcc", search="grid"),
    CandidateSpec("cnn_svm", "style", "sklearn", features="paper_cnn", needs=("paper_cnn",)),
    CandidateSpec("cnn_smote_svm", "style", "sklearn", features="paper_cnn", smote=True, needs=("paper_cnn",)),
    CandidateSpec("cnn_elm", "style", "sklearn", features="paper_cnn", classifier="elm", needs=("paper_cnn",)),
    CandidateSpec("rakel", "mood", "sklearn", features="backbone", classifier="rakel", needs=("backbone",)),
    *[CandidateSpec(f"musicnn_{d.lower()}", "tags", "pretrained", arch=f"{d}_musicnn", feature_config="musicnn") for d in ("MSD", "MTT")],
    CandidateSpec("musicnn_probe", "style", "sklearn", features="musicnn_msd", classifier="logistic", needs=("musicnn_msd",),
                  feature_config="musicnn"),
    CandidateSpec("musicnn_mood_probe", "mood", "sklearn", features="musicnn_msd", classifier="logistic",
                  needs=("musicnn_msd",), feature_config="musicnn"),
    CandidateSpec("musicnn_hash_32", "hash", "sklearn", features="musicnn_msd", classifier="itq", bits=32,
                  needs=("musicnn_msd",), feature_config="musicnn"),
    CandidateSpec("musicnn_finetune", "style", "torch", arch="musicnn_finetune", freeze=False, needs=("musicnn_msd",),
                  feature_config="musicnn"),
    BACKBONE,
]}


def candidate_features(spec: CandidateSpec, features: FeatureSettings) -> FeatureSettings:
    """The feature configuration a candidate reads: the main one, or musicnn's input."""
    return musicnn_features(features) if spec.feature_config == "musicnn" else features


def resolve_candidates(names: tuple[str, ...] | list[str]) -> list[CandidateSpec]:
    """The named candidates and what they need, dependencies first, each once."""
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


# --- targets ------------------------------------------------------------------------------


@dataclass
class TaskTargets:
    """Per split, track -> target; the output labels; for pretext, the classes of each head."""
    labels: list[str]
    splits: dict[str, dict[str, Any]]
    head_sizes: list[int] = field(default_factory=list)

    def digest_rows(self) -> list[Any]:
        return [[split, t, np.asarray(v).tolist()] for split, d in sorted(self.splits.items()) for t, v in sorted(d.items())]


def pretext_columns(tracks: pd.DataFrame, tasks: list[str]) -> pd.DataFrame:
    """Pretext label columns; ``instrument`` is derived from the demo's planted mood when absent."""
    tracks = tracks.copy()
    if "instrument" in tasks and "instrument" not in tracks.columns and "mood" in tracks.columns:
        tracks["instrument"] = tracks["mood"].map(lambda m: instrument_family(m) if isinstance(m, str) else None)
    missing = [t for t in tasks if t not in tracks.columns]
    if missing:
        raise ValueError(f"pretext task column(s) {missing} not in the tracks table")
    return tracks


def task_targets(task: TaskFamily, tracks: pd.DataFrame, settings: TrainSettings,
                 mood_labels: MultiLabelTruth | None = None) -> TaskTargets:
    """Targets of a task family. The test split is included (for evaluation) but never trained on."""
    splits = ("train", "valid", "test")
    if task in ("style", "hash"):
        column = settings.task
        labelled = tracks[tracks[column].notna()]
        classes = sorted(labelled.loc[labelled["split"] == "train", column].astype(str).unique().tolist())
        if len(classes) < 2:
            raise ValueError(f"task '{column}' needs at least two classes in the train split, found {classes}")
        index = {c: i for i, c in enumerate(classes)}
        return TaskTargets(classes, {s: {t: index[str(v)] for t, v in zip(labelled.loc[labelled.split == s, "track_id"],
                                                                          labelled.loc[labelled.split == s, column], strict=True)
                                         if str(v) in index} for s in splits})
    if task == "tags":  # a pretrained tagger's own vocabulary; nothing in the corpus is labelled with it
        return TaskTargets([], {s: {} for s in splits})
    if task == "mood":
        if mood_labels is None or not mood_labels.labels:
            raise ValueError(f"the multi-label task '{settings.mood_task}' has no labels (the voted moods need the "
                             "labels stage; a column task needs its column in the tracks table)")
        vocabulary = mood_labels.vocabulary
        hot = {t: np.isin(vocabulary, labels).astype(np.float32) for t, labels in mood_labels.labels.items()}
        return TaskTargets(list(vocabulary), {s: {t: hot[t] for t in tracks.loc[tracks.split == s, "track_id"] if t in hot}
                                         for s in splits})
    columns = pretext_columns(tracks, settings.backbone.tasks)
    names, sizes, indices = [], [], []
    labelled = columns.dropna(subset=settings.backbone.tasks)
    for column in settings.backbone.tasks:
        values = sorted(labelled.loc[labelled.split.isin(["train", "valid"]), column].astype(str).unique().tolist())
        names += [f"{column}:{v}" for v in values]
        sizes.append(len(values))
        indices.append({v: i for i, v in enumerate(values)})
    # The backbone learns from train + valid only; it validates on valid (it is a feature
    # extractor, judged by the models built on it).
    def row(r: Any) -> np.ndarray:
        return np.array([indices[i].get(str(r[c]), 0) for i, c in enumerate(settings.backbone.tasks)], np.int64)

    rows = {s: {r.track_id: row(r._asdict()) for r in labelled[labelled.split == s].itertuples()} for s in ("train", "valid")}
    return TaskTargets(names, {**rows, "test": {}}, sizes)


# --- training -----------------------------------------------------------------------------


@dataclass
class Trained:
    scorer: TorchScorer | SklearnScorer
    history: list[dict[str, float]]
    params: dict[str, Any]
    summary: dict[str, Any]


def _contract(spec: CandidateSpec, settings: TrainSettings, targets: TaskTargets, stored: tuple[str, ...],
              config_hash: str) -> Contract:
    return Contract(spec.registered_task(settings), spec.kind, list(targets.labels), stored, config_hash, spec.name)  # type: ignore[arg-type]


def _channel_stats(split: SegmentSplit, channels: list[int]) -> tuple[np.ndarray, np.ndarray]:
    x = split.x[:, channels]
    return x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3)) + 1e-6


def _class_weights(y: np.ndarray, n: int) -> np.ndarray:
    counts = np.bincount(y, minlength=n).astype(np.float32)
    return counts.sum() / np.maximum(counts, 1) / n


def build_network(spec: CandidateSpec, settings: TrainSettings, n_out: int, in_channels: int,
                  deps: dict[str, Any], train: SegmentSplit | None = None,
                  head_sizes: list[int] | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The network of a torch candidate, freshly initialised from ``settings.seed``
    (``head_sizes``: the pretext heads' class counts)."""
    torch.manual_seed(settings.seed)
    facts: dict[str, Any] = {}
    if spec.arch == "paper_cnn":
        return PaperCNN(n_out, in_channels, dropout=settings.dropout), facts
    if spec.arch == "short_chunk":
        return ShortChunkCNN(n_out, in_channels, tuple(settings.channels), spec.residual, settings.dropout), facts
    if spec.arch == "crnn":
        return CRNN(n_out, in_channels, tuple(settings.channels)[:3], dropout=settings.dropout), facts
    if spec.arch == "pretext":
        return PretextCNN(list(head_sizes or []), in_channels, tuple(settings.backbone.channels), settings.dropout), facts
    if spec.arch == "musicnn_finetune":
        pretrained = copy.deepcopy(deps["musicnn_msd"].net.net)
        return PretrainedTagger(pretrained, n_out, settings.dropout, tune_midend=True), facts
    backbone: TorchScorer = deps["backbone"]
    trunk = copy.deepcopy(backbone.net.trunk)
    if spec.arch == "transfer":
        return TransferCNN(trunk, n_out, freeze=spec.freeze, dropout=settings.dropout), facts
    if spec.arch == "crnnh":
        hs = settings.hashing
        assert train is not None
        sample = train.x[: min(len(train), 256)]
        prepared = backbone.prepare(torch.from_numpy(np.ascontiguousarray(sample)))
        selected = select_maps_by_variance(trunk, list(prepared.split(64)), hs.maps_per_layer)
        facts["selected_maps"] = [s.tolist() for s in selected]
        return CRNNH(trunk, selected, spec.bits, n_out, hs.pooled, hs.hidden, hs.freeze_backbone), facts
    raise ValueError(f"{spec.name}: unknown architecture {spec.arch}")


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
    deps = deps or {}
    stored = map_names(feature_settings)
    if spec.family == "pretrained":
        if pretrained_dir is None:
            raise ValueError(f"{spec.name}: a pretrained candidate needs the folder of converted weights")
        return pretrained_tagger(spec, _contract(spec, settings, TaskTargets(list(TAGS[spec.arch.split("_")[0]]), {}),
                                                 stored, features.config_hash), pretrained_dir)
    train = segment_split(features, stored, targets.splits["train"])
    valid = segment_split(features, stored, targets.splits["valid"])
    if len(train) == 0:
        raise ValueError(f"{spec.name}: no training segments for task {spec.task}")
    contract = _contract(spec, settings, targets, stored, features.config_hash)
    started = time.perf_counter()
    if spec.family == "sklearn":
        return _train_sklearn(spec, train, valid, contract, settings, feature_settings, deps, started)
    if spec.arch in ("transfer", "crnnh"):
        backbone: TorchScorer = deps["backbone"]
        channels = backbone.channels.tolist()
        mean, std = backbone.mean.flatten().numpy(), backbone.std.flatten().numpy()
    elif spec.arch == "musicnn_finetune":  # musicnn normalises its own input
        channels, mean, std = [0], np.zeros(1, np.float32), np.ones(1, np.float32)
        settings = settings.model_copy(update={"learning_rate": settings.learning_rate * FINETUNE_LR_SCALE})
    else:
        channels = [0] if spec.maps == "logmel" else list(range(len(stored)))
        mean, std = _channel_stats(train, channels)
    n_out = sum(targets.head_sizes) if spec.kind == "pretext" else len(targets.labels)
    net, facts = build_network(spec, settings, n_out, len(channels), deps, train, targets.head_sizes)
    scorer = TorchScorer(net, contract, channels, mean, std)
    hs = settings.hashing
    head = HeadSpec(spec.kind, targets.head_sizes,
                    _class_weights(train.y, len(targets.labels)) if spec.kind == "single" else None,
                    hs.quantisation_weight, hs.balance_weight, hs.loss)
    epochs = settings.backbone.epochs if spec.kind == "pretext" else settings.epochs
    result = fit(scorer, train, valid, head, settings, epochs=epochs, checkpoint=checkpoint, on_epoch=on_epoch,
                 floor_db=feature_settings.db_floor)
    best = result.history[result.best_epoch - 1] if result.history else {}
    params = {"architecture": spec.arch, "input_maps": [stored[c] for c in channels],
              "parameters": sum(p.numel() for p in net.parameters()),
              "trainable_parameters": sum(p.numel() for p in net.parameters() if p.requires_grad), **facts}
    summary = {"best_epoch": result.best_epoch, "epochs": len(result.history), "valid_score": best.get("valid_score"),
               "seconds": round(result.seconds, 1), "device": result.device, "precision": result.precision,
               "resumed_from_epoch": result.resumed_from,
               "n_train_segments": len(train), "n_valid_segments": len(valid)}
    return Trained(result.scorer, result.history, params, summary)


def pretrained_tagger(spec: CandidateSpec, contract: Contract, pretrained_dir: Path) -> Trained:
    """A pretrained tagger as a candidate: its converted weights under the stored maps' contract;
    nothing is trained."""
    started = time.perf_counter()
    net = PretrainedTagger(load_pretrained(spec.arch, pretrained_dir))
    scorer = TorchScorer(net, contract, [0], np.zeros(1, np.float32), np.ones(1, np.float32)).eval()
    params = {"architecture": spec.arch, "weights": f"{MUSICNN_WHEEL.filename} (sha256 {MUSICNN_WHEEL.sha256})",
              "licence": MUSICNN_WHEEL.licence, "parameters": sum(p.numel() for p in net.parameters())}
    summary = {"valid_score": None, "seconds": round(time.perf_counter() - started, 1), "device": "cpu", "precision": "fp32"}
    return Trained(scorer, [], params, summary)


def _train_sklearn(spec: CandidateSpec, train: SegmentSplit, valid: SegmentSplit, contract: Contract,
                   settings: TrainSettings, feature_settings: FeatureSettings, deps: dict[str, Any],
                   started: float) -> Trained:

    sv = settings.svm
    if spec.features == "mfcc":
        featuriser: Any = MfccFeaturiser(contract.stored_maps.index("logmel"), feature_settings.n_mfcc)
    else:
        featuriser = EmbeddingFeaturiser(deps[spec.features])
    x = featuriser(train.x)
    params: dict[str, Any] = {"features": spec.features, "feature_dims": int(x.shape[1]), "classifier": spec.classifier}
    probe_score = None
    if spec.classifier == "logistic":
        valid_truth = track_targets(valid) if len(valid) else np.zeros(0)
        estimator, c, probe_score = baselines.linear_probe(x, train.y, featuriser(valid.x), valid.track_ids, valid_truth,
                                                           spec.kind, settings.seed)
        params.update({"logistic_C": c, "C_grid": list(baselines.LINEAR_PROBE_C)})
    elif spec.classifier == "itq":
        estimator = baselines.ItqHasher(spec.bits, random_state=settings.seed).fit(x)
        params["bits"] = spec.bits
    elif spec.classifier == "rakel":
        estimator = baselines.rakel(x, train.y.astype(int), sv.rakel_labelset, settings.seed)
        params["labelset_size"] = sv.rakel_labelset
    elif spec.classifier == "elm":
        estimator = baselines.ELMClassifier(sv.elm_hidden, random_state=settings.seed).fit(x, train.y)
        params["hidden"] = sv.elm_hidden
    else:
        estimator, search = baselines.tuned_svm(x, train.y, train.track_ids, sv, settings.seed, spec.search, spec.smote)
        params.update({"search": search.method, "svm_C": search.c, "svm_gamma": search.gamma,
                       "cv_accuracy": search.cv_accuracy, "search_evaluations": search.evaluations,
                       "pca_components": int(estimator.named_steps["pca"].n_components_), "smote": spec.smote})
    scorer = SklearnScorer(featuriser, estimator, contract)
    valid_score = probe_score if probe_score is not None else sklearn_valid_score(scorer, valid)
    seconds = time.perf_counter() - started
    summary = {"valid_score": valid_score, "seconds": round(seconds, 1), "device": "cpu", "precision": "fp64",
               "n_train_segments": len(train), "n_valid_segments": len(valid)}
    return Trained(scorer, [], params, summary)


def sklearn_valid_score(scorer: SklearnScorer, valid: SegmentSplit) -> float:
    if len(valid) == 0:
        return float("nan")
    _, per_track = track_mean(scorer.scores(valid.x), valid.track_ids)
    if scorer.contract.kind == "hash":  # an unsupervised hasher: Hamming mAP@10, relevant = same class
        k = min(10, len(per_track) - 1)
        if k < 1:
            return float("nan")
        return float(average_precision_at_k(top_k(hamming_distance(per_track), k), track_targets(valid)).mean())
    return track_level_score(per_track, track_targets(valid), scorer.contract.kind)


def key_settings(spec: CandidateSpec, settings: TrainSettings) -> dict[str, Any]:
    """The settings a candidate's result depends on (so changing the SVM search budget does not
    retrain the CNNs, and choosing other candidates retrains nothing)."""
    if spec.family == "pretrained":  # the weights, not the corpus or the training settings
        return {"spec": asdict(spec), "weights_sha256": MUSICNN_WHEEL.sha256}
    shared = {"task": settings.task, "seed": settings.seed}
    if spec.family == "sklearn":
        chosen = {**shared, "svm": settings.svm.model_dump(mode="json")}
    else:
        chosen = settings.model_dump(mode="json", exclude={*settings._runtime_fields, "svm", "hashing", "backbone",
                                                            "model_prefix", "mood_task"})
        if spec.task == "hash":
            chosen["hashing"] = settings.hashing.model_dump(mode="json")
        if spec.task == "pretext":  # trains for backbone.epochs, on its own channels
            chosen.pop("epochs")
            chosen.pop("channels")
            chosen["backbone"] = settings.backbone.model_dump(mode="json")
    if spec.task == "mood":
        chosen["mood_task"] = settings.mood_task
    definition = asdict(spec)
    if spec.feature_config == "main":  # keys from before the field existed stay valid
        definition.pop("feature_config")
    return {"spec": definition, "settings": chosen}
