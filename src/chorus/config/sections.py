"""The settings sections: one small typed model per stage (and the services, schedules, tasks).

``config_hash`` of a section (only the fields that change what the stage produces) goes into
cache keys and output metadata, so a changed setting never reuses stale output.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def stable_hash(data: Any, length: int = 16) -> str:
    """Hash of JSON-able data that does not depend on key order."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


DEFAULT_STYLES: tuple[str, ...] = (
    "bach",
    "palestrina",
    "monteverdi",
    "trecento",
    "essenFolksong",
    "oneills1850",
)


class SectionSettings(BaseModel):
    """Base of every stage's settings. ``_runtime_fields`` do not change outputs, so they stay
    out of the config hash (e.g. how many workers compute the same thing)."""

    model_config = ConfigDict(extra="forbid")
    _runtime_fields: frozenset[str] = frozenset()

    def config_hash(self) -> str:
        data = self.model_dump(mode="json", exclude=set(self._runtime_fields))
        return stable_hash(data)


class DemoSettings(SectionSettings):
    """The embedded demo corpus: rendered excerpts of music21's corpus plus a simulated crowd."""

    _runtime_fields = frozenset({"workers", "render_cache"})

    seed: int = 7
    scale: float = Field(1.0, gt=0, description="Multiplies tracks per style and users.")
    styles: list[str] = Field(default_factory=lambda: list(DEFAULT_STYLES))
    tracks_per_style: int = Field(30, ge=2)
    clip_seconds: float = Field(9.0, gt=1)
    sample_rate: int = 22050
    measures: int = Field(12, ge=1, description="Measures cut from each work before rendering.")
    soundfont: Path | None = Field(None, description="SF2 file; default: pretty_midi's TimGM6mb.")
    users: int = Field(400, ge=4)
    communities: int = Field(4, ge=1)
    playlists_per_user: tuple[int, int] = (2, 5)
    playlist_size: tuple[int, int] = (4, 12)
    uniform_perception: bool = Field(
        False, description="All communities perceive moods alike (negative control for voting)."
    )
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    workers: int = Field(2, ge=1)
    render_cache: Path | None = Field(None, description="Rendered clips kept across corpora and state directories "
                                                        "(default: ~/.cache/chorus/renders).")


class IngestSettings(SectionSettings):
    """Where the corpus and the social data come from and what a usable file is."""

    # label_from shapes the candidate table (its label column), which the ingest key hashes itself
    _runtime_fields = frozenset({"workers", "label_from"})

    manifest: str | None = Field(
        None, description="Manifest (CSV/Parquet), a folder of audio files, or None for the demo."
    )
    adapter: Literal["auto", "demo", "folder", "manifest", "mtat", "jamendo", "gtzan"] = "auto"
    label_from: Literal["top", "parent", "grandparent", "none"] = Field(
        "top", description="A folder's labels: the folder under the root a file is in (top: root/<label>/**), the "
                           "file's own folder (parent), the one above it (grandparent: Artist/Album/file -> Artist), "
                           "or none (an unlabelled library).")
    split_files: dict[str, str] | None = Field(None, description="Standard datasets: {train|valid|test: file listing "
                                                                 "clip ids, file names or paths}; overrides the usual split.")
    top_tags: int | None = Field(50, ge=1, description="MagnaTagATune: keep the most frequent tags (None: all).")
    tag_category: Literal["mood/theme", "genre", "instrument", "top50", "all"] = Field(
        "mood/theme", description="MTG-Jamendo: which tags to keep.")
    jamendo_split: str = Field("split-0", description="MTG-Jamendo: the official split (split-0 .. split-4).")
    social_dir: str | None = Field(None, description="Folder with users/follows/playlists/playlist_tracks.")
    allowed_schemes: list[str] = Field(default_factory=lambda: ["file"])
    min_duration_s: float = Field(3.0, gt=0)
    max_duration_s: float = Field(3600.0, gt=0)
    max_remote_bytes: int = Field(2 * 2**30, gt=0, description="A remote object (s3://, gs://, ...) larger than this is "
                                                              "refused as too_large while it streams in.")
    silence_dbfs: float = Field(-60.0, description="Peak level below which a file is silent.")
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    split_seed: int = 0
    workers: int = Field(4, ge=1)


class FeatureSettings(SectionSettings):
    """Log-mel per fixed-length segment; one stored shape (n_mels x segment_frames)."""

    # how and where the maps are computed, not what they are: outside the config hash
    _runtime_fields = frozenset({"shard_size", "block_seconds", "backend", "torch_device", "device_batch"})

    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None
    segment_frames: int = Field(128, ge=16)
    segment_hop_frames: int = Field(128, ge=1)
    db_floor: float = Field(-100.0, description="dB floor; reference is fixed at 1.0 (never per-segment max).")
    short_track: Literal["pad", "reject"] = Field("pad", description="A track shorter than one segment: pad with the floor, or reject.")
    hpss: bool = Field(True, description="Also store harmonic and percussive log-mel (HPSS), the article's extra channels.")
    hpss_kernel: int = Field(31, ge=3, description="HPSS median window (frames / bins), odd; librosa's default 31.")
    n_mfcc: int = Field(20, ge=1, le=128)
    shard_size: int = Field(100, ge=1, le=1000, description="Tracks per Prefect task (50-500 in production); Dask maps files inside.")
    block_seconds: float | None = Field(60.0, gt=0, description="A file longer than two blocks is extracted block by "
                                                                 "block (memory bounded by the block, not the track; the "
                                                                 "same maps within float32 rounding); None: whole tracks.")
    backend: Literal["numpy", "torch", "auto"] = Field(
        "numpy", description="Maps on the CPU (numpy) or batched on a torch device (same maps within 1e-3 dB); "
                             "auto: torch where the worker has CUDA.")
    torch_device: str = Field("auto", description="Device of the torch backend (auto: cuda if available, else cpu).")
    device_batch: int = Field(16, ge=1, le=512, description="Files per Dask task and device call with the torch backend.")

    @model_validator(mode="after")
    def _mfcc_within_mels(self) -> FeatureSettings:
        if self.n_mfcc > self.n_mels:
            raise ValueError(f"n_mfcc ({self.n_mfcc}) cannot exceed n_mels ({self.n_mels}): MFCCs are a DCT of the mel bands")
        return self

    @field_validator("hpss_kernel")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("hpss_kernel must be odd (a centred median window)")
        return value


class LabelSettings(SectionSettings):
    """Mood truth from playlist tags by social-network weighted voting (docs/method.md, "Labels")."""

    _runtime_fields = frozenset({"target_batch", "dask_min_targets"})

    synonyms_file: Path | None = Field(None, description="YAML synonym table; default: the bundled one.")
    max_depth: int = Field(3, ge=1, le=10, description="Hops of the follow graph a personal vote reaches.")
    weighting: Literal["inverse", "exponential", "table"] = Field(
        "inverse", description="w(d): 1/d, base^-(d-1), or weight_table[d-1].")
    base: float = Field(2.0, gt=1.0, description="Base of the exponential weighting.")
    weight_table: list[float] | None = Field(None, description="w(1..max_depth) for weighting=table.")
    include_self: bool = Field(False, description="Whether a target's own tags count in their personal truth.")
    prior_weight: float = Field(
        5.0, ge=0.0,
        description="Weight of global truth added to every personal vote (shrinks votes of few, distant voters).")
    self_weight: float = Field(1.0, ge=0.0)
    label_rule: Literal["top_k", "threshold"] = "top_k"
    top_k: int = Field(2, ge=1, le=12)
    threshold: float = Field(0.5, gt=0.0, le=1.0, description="For label_rule=threshold: moods scoring at least this.")
    group_by: list[str] = Field(default_factory=lambda: ["culture", "age_band"],
                                description="User attributes that define groups (one group truth per value).")
    personal: Literal["none", "users", "sample", "group", "all"] = Field(
        "sample", description="Whose personal truths are written: a list, a sample, a group's members, or all.")
    personal_users: list[str] = Field(default_factory=list)
    personal_sample: int = Field(20, ge=0)
    personal_group: str | None = Field(None, description="attribute=value, for personal=group.")
    target_batch: int = Field(1000, ge=1, description="Targets per sparse multi-source BFS (bounds memory).")
    dask_min_targets: int = Field(
        50_000, ge=1,
        description="From this many personal targets on, batches run on Dask (compute.address or a local cluster).")
    protocol_users: int = Field(120, ge=0, description="Users sampled for the held-out-tags protocol.")
    protocol_min_songs: int = Field(4, ge=2)
    protocol_holdout: float = Field(0.5, gt=0.0, lt=1.0)
    bootstrap: int = Field(1000, ge=100)
    seed: int = 0

    @model_validator(mode="after")
    def _table_matches_depth(self) -> LabelSettings:
        if self.weighting == "table" and (self.weight_table is None or len(self.weight_table) < self.max_depth):
            raise ValueError(f"weighting=table needs weight_table with {self.max_depth} values (one per depth)")
        return self


class SvmSearchSettings(SectionSettings):
    """RBF SVM on MFCC statistics (or CNN features): C and gamma tuned by a search whose fitness
    is cross-validated accuracy (folds grouped by track)."""

    search: Literal["pso", "optuna", "grid"] = "pso"
    budget: int = Field(24, ge=4, description="SVM fits per search (PSO: particles x iterations).")
    particles: int = Field(6, ge=2)
    folds: int = Field(3, ge=2)
    pca_variance: float = Field(0.95, gt=0.0, le=1.0, description="PCA keeps this share of the variance.")
    log10_c: tuple[float, float] = (-2.0, 3.0)
    log10_gamma: tuple[float, float] = (-4.0, 1.0)
    elm_hidden: int = Field(512, ge=8, description="Hidden units of the extreme learning machine.")
    rakel_labelset: int = Field(3, ge=2, description="k of random k-labelsets.")


class HashSettings(SectionSettings):
    """CRNNH: maps from the pretrained backbone's conv layers -> GRU -> k-bit codes."""

    maps_per_layer: int = Field(24, ge=1, description="Feature maps kept per layer (highest activation variance).")
    pooled: int = Field(2, ge=1, description="Each selected map pooled to pooled x pooled values.")
    hidden: int = Field(128, ge=8)
    loss: Literal["classification", "pairwise"] = "classification"
    quantisation_weight: float = Field(0.1, ge=0.0)
    balance_weight: float = Field(0.1, ge=0.0)
    freeze_backbone: bool = True


class BackboneSettings(SectionSettings):
    """The pretext task the shared backbone is pretrained on, and the corpus it learns from."""

    tasks: list[str] = Field(default_factory=lambda: ["style", "instrument"],
                             description="Track columns predicted together; 'instrument' is the GM family rendered.")
    corpus: Literal["rendered", "own"] = Field(
        "rendered", description="rendered: a pretext corpus of music21 renderings (demo.styles, any instrument) "
                                "under <state_dir>/pretext, without the works the main corpus holds out; own: the "
                                "main corpus's train + valid splits.")
    corpus_tracks_per_style: int = Field(40, ge=4, description="Rendered pretext tracks per style (times demo.scale).")
    corpus_renderings_per_work: int = Field(2, ge=1, le=4, description="Renderings of each work, each with another "
                                                                       "instrument and its own mood profile.")
    corpus_valid_share: float = Field(0.15, gt=0.0, lt=0.5, description="Share of each style's works the backbone "
                                                                        "validates on.")
    epochs: int = Field(12, ge=1)
    channels: tuple[int, ...] = (32, 64, 128, 128)


# What `chorus run --task <single-label task>` trains: no backbone (its pretext labels are the
# demo's), the article's CNN, the short-chunk CNN, the MFCC + SVM baseline, the linear probe on
# musicnn's pretrained embeddings and a 32-bit hash of them (so similar-song search works on any corpus).
SINGLE_LABEL_CANDIDATES: tuple[str, ...] = ("paper_cnn", "short_chunk", "mfcc_svm_pso", "musicnn_probe", "musicnn_hash_32")

PROFILES: dict[str, tuple[str, ...]] = {
    "default": ("paper_cnn", "short_chunk", "mood_tagger", "crnnh_32", "mfcc_svm_pso", "musicnn_probe", "musicnn_mood_probe",
                "musicnn_mtt"),
    "full": ("paper_cnn", "paper_cnn_3ch", "short_chunk", "short_chunk_logmel", "short_chunk_res", "crnn",
             "transfer_frozen", "transfer_finetune", "mood_tagger", "crnnh_16", "crnnh_32", "crnnh_64",
             "mfcc_svm_pso", "mfcc_svm_optuna", "mfcc_svm_grid", "cnn_svm", "cnn_smote_svm", "cnn_elm", "rakel",
             "musicnn_probe", "musicnn_mood_probe", "musicnn_mtt", "musicnn_finetune", "musicnn_hash_32", "crnnh_musicnn_32"),
}


class TrainSettings(SectionSettings):
    """Which candidates train and how. Each candidate's cache key holds these settings (less the
    selection and run-time fields) plus its own definition, so adding a candidate retrains nothing."""

    _runtime_fields = frozenset({"device", "threads", "loader_workers", "profile", "candidates", "precision_check"})

    model_prefix: str = Field("chorus", description="Registered names are <prefix>-<task>, e.g. chorus-style.")
    task: str = Field("style", description="Tracks column of the single-label task.")
    mood_task: str = Field("mood", description="Name of the multi-label task trained on the global voted labels.")
    split_column: str = Field("split", description="Tracks column with train/valid/test (a task's own split).")
    profile: Literal["default", "full"] = "default"
    candidates: list[str] | None = Field(None, description="Explicit candidates; overrides the profile.")
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(32, ge=2)
    learning_rate: float = Field(3e-3, gt=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    schedule: Literal["cosine", "step", "onecycle"] = "onecycle"
    step_every: int = Field(10, ge=1, description="Epochs between decays for schedule=step.")
    weight_decay: float = 1e-4
    channels: tuple[int, ...] = (16, 32, 64, 64)
    dropout: float = 0.3
    patience: int = Field(8, ge=1, description="Early stopping: epochs without a better validation score.")
    grad_clip: float = Field(5.0, gt=0)
    crop_fraction: float = Field(0.875, gt=0.25, le=1.0, description="Random time crops (the article's 224 of 256).")
    time_masks: int = Field(1, ge=0, description="SpecAugment time masks per example.")
    freq_masks: int = Field(1, ge=0)
    mask_width: int = Field(12, ge=1, description="Largest mask, in frames / bands.")
    mixup_alpha: float = Field(0.0, ge=0.0, description="Mixup for single-label tasks; 0 turns it off.")
    level_db: float = Field(6.0, ge=0.0, description="Random level change per example, up to +- this many dB "
                                                     "(what a gain change does to a dB map).")
    noise_probability: float = Field(0.5, ge=0.0, le=1.0, description="Share of examples given additive white noise "
                                                                     "in the power domain.")
    noise_snr_db: tuple[float, float] = Field((10.0, 40.0), description="Range of the noise's SNR, drawn uniformly.")
    seed: int = 0
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast (+ channels_last) where the CPU has bf16 units or on CUDA.")
    threads: int | None = None
    loader_workers: int = Field(0, ge=0, description="DataLoader worker processes (0: batches cut in the training process).")
    svm: SvmSearchSettings = Field(default_factory=SvmSearchSettings)
    hashing: HashSettings = Field(default_factory=HashSettings)
    backbone: BackboneSettings = Field(default_factory=BackboneSettings)

    @property
    def selected(self) -> tuple[str, ...]:
        return tuple(self.candidates) if self.candidates else PROFILES[self.profile]

    def registered_name(self, task: str) -> str:
        return f"{self.model_prefix}-{task}"

    @property
    def model_name(self) -> str:
        """The single-label task's registered name (chorus-style by default)."""
        return self.registered_name(self.task)


class LabelTask(SectionSettings):
    """A labelling task: where its labels come from, its vocabulary, single- or multi-label.
    ``chorus run --task NAME`` trains and reports it; it registers as <prefix>-<NAME> (a single-
    label task as <prefix>-<column>)."""

    kind: Literal["single", "multi"]
    source: Literal["column", "file", "voted"] = Field(
        "column", description="A tracks column (from the manifest or a dataset's annotations), an annotation file "
                              "(``file``), or the crowd's voted moods.")
    column: str | None = Field(None, description="Default: the task's name.")
    file: str | None = Field(None, description="source=file: CSV/TSV/Parquet with a track_id (or uri, as in the "
                                               "manifest) column and the label column.")
    vocabulary: list[str] | None = Field(None, description="Default: the labels found in the data.")
    top_n: int | None = Field(None, ge=1, description="Multi-label: keep the most frequent labels of the train split.")
    separator: str = Field(";", description="Multi-label column: labels joined by this.")
    split: str = Field("split", description="Column (of the tracks, or of the annotation file) with each track's "
                                            "train/valid/test for this task; default: the corpus's split.")

    @model_validator(mode="after")
    def _file_given(self) -> LabelTask:
        if self.source == "file" and not self.file:
            raise ValueError("source=file needs file: the annotation file")
        return self


def default_tasks() -> dict[str, LabelTask]:
    return {
        "style": LabelTask(kind="single", column="style"),
        "mood": LabelTask(kind="multi", source="voted"),
        "tags": LabelTask(kind="multi", column="tags"),  # MagnaTagATune, MTG-Jamendo
        "genre": LabelTask(kind="single", column="genre"),  # GTZAN
        "label": LabelTask(kind="single", column="label"),  # a folder-per-label corpus
    }


class EvaluateSettings(SectionSettings):
    """Held-out evaluation and its report."""

    split: str = "test"
    alias: str = "champion"
    bootstrap: int = Field(1000, ge=100, description="Bootstrap rounds of each reported interval.")
    seed: int = Field(0, description="Seed of the bootstrap resampling.")
    subject: Literal["single", "multi"] = Field("single", description="Which model the report describes: the "
                                                                      "single-label task's (train.task) or the "
                                                                      "multi-label task's (train.mood_task).")


class DegradedQuerySettings(SectionSettings):
    """The search check: each corpus track queried with degraded copies of its own audio (another
    excerpt, added white noise, a gain change); the original must come back in the top k."""

    excerpt_s: float = Field(4.0, gt=0, description="Length of the excerpt query, from a random offset.")
    snr_db: float = Field(30.0, description="Signal-to-noise ratio of the added white noise.")
    gain_db: float = Field(-6.0, description="Gain change of the gain query.")
    k: int = Field(10, ge=1)
    tracks: int | None = Field(90, ge=1, description="Query with this many tracks: every test-split track, then a "
                                                     "seeded sample of the others (None: every track).")
    seed: int = 0


class SearchSettings(SectionSettings):
    """Similar-song search: which registered models make the index, and how it is searched."""

    _runtime_fields = frozenset({"k", "mode"})

    semantic_model: str | None = Field(None, description="Registered model whose penultimate layer gives the semantic "
                                                         "vectors (default: the style model, chorus-style).")
    hash_bits: int = Field(32, description="The hash model is <prefix>-hash-<bits>.")
    alias: str = Field("champion", description="Alias (or version) of both models the index is built for.")
    k: int = Field(10, ge=1)
    mode: Literal["hash", "semantic", "rerank"] = "rerank"
    rerank_candidates: int = Field(100, ge=1, description="Hamming candidates re-ranked by cosine in rerank mode.")
    approximate_above: int = Field(200_000, ge=1, description="Corpora larger than this get approximate (IVF) "
                                                              "indexes instead of exact flat ones.")
    ivf_lists: int | None = Field(None, ge=1, description="IVF cells of the approximate indexes (default sqrt(n)).")
    ivf_probe: int = Field(32, ge=1, description="IVF cells visited per query.")
    check: DegradedQuerySettings = Field(default_factory=DegradedQuerySettings)


class PromotionRule(SectionSettings):
    """Promote when ``primary`` improves by at least ``min_improvement`` and no guard metric
    drops by more than its tolerance."""

    primary: str
    min_improvement: float = 0.0
    guards: dict[str, float] = Field(default_factory=dict)


def _default_rules() -> dict[str, PromotionRule]:
    return {
        "single": PromotionRule(primary="accuracy", min_improvement=0.01, guards={"balanced_accuracy": 0.02, "macro_f1": 0.05}),
        "multi": PromotionRule(primary="macro_pr_auc", min_improvement=0.005, guards={"micro_pr_auc": 0.02, "macro_roc_auc": 0.02}),
        "hash": PromotionRule(primary="map_at_10", min_improvement=0.005, guards={"bit_balance": 0.1}),
    }


class PromoteSettings(SectionSettings):
    """The promotion gate: a rule per kind of task, overridable per registered model name."""

    rules: dict[str, PromotionRule] = Field(default_factory=_default_rules, description="Per task kind: single, multi, hash.")
    models: dict[str, PromotionRule] = Field(default_factory=dict, description="Per registered name, e.g. chorus-style.")
    split: str = Field("valid", description="The split the gate scores challenger and champion on; never the test "
                                            "split, which reports the decision's outcome.")
    force: bool = Field(False, description="Promote a winning challenger even when the split is too small to resolve "
                                           "the rule's minimum improvement.")

    @field_validator("split")
    @classmethod
    def _not_test(cls, split: str) -> str:
        if split == "test":
            raise ValueError("the test split reports; it never chooses: use valid (or a split of your own)")
        return split

    def rule_for(self, name: str, kind: str) -> PromotionRule:
        return self.models.get(name) or self.rules[kind]


class ServicesSettings(SectionSettings):
    """The local services `chorus services up` starts (infra/local): a Prefect server, an MLflow
    tracking server on PostgreSQL, a Dask scheduler with workers, and `chorus serve`. Everything
    listens on ``host`` only; data and logs live under <state_dir>/services/."""

    host: str = Field("127.0.0.1", description="Interface every service binds to.")
    prefect_port: int = Field(4200, ge=1, le=65535)
    mlflow_port: int = Field(5000, ge=1, le=65535)
    postgres_port: int = Field(5433, ge=1, le=65535, description="Not 5432: a system PostgreSQL may hold it.")
    dask_port: int = Field(8786, ge=1, le=65535)
    dask_dashboard_port: int = Field(8787, ge=0, le=65535, description="0: no dashboard.")
    dask_workers: int = Field(2, ge=1)
    dask_worker_memory: str = Field("4GiB", description="Memory limit per Dask worker.")
    serve: bool = Field(True, description="Also start `chorus serve` (the deployments) once the servers are up.")
    startup_timeout_s: float = Field(180.0, gt=0, description="How long each service may take to pass its health check.")
    run_as: str = Field("chorus-services", description="Started as root, the MLflow and Prefect servers run as this "
                                                   "unprivileged user (made as a system user where missing); started "
                                                   "as anyone else, as that user.")
    dask_run_as: str = Field("chorus-dask", description="Started as root, the Dask scheduler runs as this unprivileged "
                                                   "user, not run_as: its key runs code on the workers, so MLflow and "
                                                   "Prefect never hold it.")


class DriftSettings(SectionSettings):
    """The drift watch (chorus.evaluation.drift): each new batch against the champion's training tracks."""

    fdr: float = Field(0.05, gt=0, lt=1, description="False discovery rate over all the batch's tests (Benjamini-Hochberg).")
    threshold: float = Field(0.1, ge=0, lt=1, description="The batch drifts when more than this share of its tests "
                                                         "reject; then orchestration.notification_block is told.")
    min_tracks: int = Field(10, ge=2, description="A smaller batch is not tested (too few tracks to tell).")


class OrchestrationSettings(SectionSettings):
    """The deployments `chorus serve` (and prefect.yaml) define: schedules, their timezone, and
    where a failed run is reported."""

    timezone: str = Field("UTC", description="IANA timezone of both schedules, e.g. Europe/Berlin.")
    refresh_cron: str = Field("0 2 * * *", description="Nightly ingest + features + labels + drift watch.")
    retrain_cron: str = Field("0 4 * * 0", description="Weekly pretrain + train + promote + index + evaluate.")
    schedules_active: bool = Field(True, description="False: the scheduled deployments exist but are paused.")
    notification_block: str | None = Field(
        None, description="A Prefect notification block (<block-type-slug>/<name>, e.g. slack-webhook/chorus-alerts) "
                          "told about every failed run, beside the log and <state>/audit/failures.jsonl.")
    served_lock_timeout_s: float = Field(
        3600.0, ge=0, description="How long a run of `chorus serve` waits for the state lock; then it fails (audited) "
                                  "and the next scheduled run proceeds.")
    flow_timeout_s: float = Field(8 * 3600.0, gt=0, description="Time limit of every flow run (a whole pipeline).")
    task_timeout_s: float = Field(3600.0, gt=0, description="Time limit of a task that is not extraction or training.")
    file_timeout_s: float = Field(300.0, gt=0, description="Extraction time allowed per file; a shard's task gets it "
                                                           "once per file a worker extracts in turn.")
    epoch_timeout_s: float = Field(1800.0, gt=0, description="Training time allowed per epoch; a candidate's task gets it "
                                                             "once per epoch.")
    service_wait_s: float = Field(30.0, ge=0, description="How long a client retries a service that stopped answering "
                                                          "(MLflow, and PostgreSQL through it) before the run fails, "
                                                          "naming the service and its address.")
    import_roots: list[Path] = Field(
        default_factory=list, description="Folders a deployment run may read inputs from (manifests, social tables, "
                                          "label files, libraries, files to tag, search or hum); none: a deployment "
                                          "run names no input path of its own.")
    deployment_may_set: list[str] = Field(
        default_factory=list, description="Server-only settings (where a run reads, writes and sends work: "
                                          "state_dir, mlflow_tracking_uri, prefect_api_url, export_root, compute.address, "
                                          "ingest.allowed_schemes, services, orchestration, promote.force, promote.rules) that a "
                                          "deployment run's settings "
                                          "parameter may still change, e.g. [compute.address].")
