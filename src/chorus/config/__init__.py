"""Settings: one typed model, defaults < YAML file < environment (CHORUS_*) < flags.

Each stage reads its own section (``chorus.config.sections``); ``ChorusSettings`` holds them all.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from chorus.config.compute import MOVED_TO_COMPUTE, ComputeSettings
from chorus.config.library import LibrarySettings
from chorus.config.melody import MelodySettings
from chorus.config.personal import PersonalSettings
from chorus.config.sections import (
    DEFAULT_STYLES,
    PROFILES,
    SINGLE_LABEL_CANDIDATES,
    BackboneSettings,
    DegradedQuerySettings,
    DemoSettings,
    DriftSettings,
    EvaluateSettings,
    FeatureSettings,
    HashSettings,
    IngestSettings,
    LabelSettings,
    LabelTask,
    OrchestrationSettings,
    PromoteSettings,
    PromotionRule,
    SearchSettings,
    SectionSettings,
    ServicesSettings,
    SvmSearchSettings,
    TrainSettings,
    default_tasks,
    stable_hash,
)
from chorus.errors import ConfigError

__all__ = [
    "DEFAULT_STYLES", "PROFILES", "SINGLE_LABEL_CANDIDATES", "BackboneSettings", "ChorusSettings", "ComputeSettings", "DegradedQuerySettings",
    "DemoSettings", "DriftSettings", "EvaluateSettings", "FeatureSettings", "HashSettings", "IngestSettings", "LabelSettings", "LabelTask",
    "LibrarySettings", "MelodySettings", "PersonalSettings",
    "OrchestrationSettings", "PromoteSettings", "PromotionRule", "SearchSettings", "SectionSettings", "ServicesSettings",
    "SvmSearchSettings", "TrainSettings", "load_settings", "parse_overrides", "set_dotted", "stable_hash",
]


class ChorusSettings(BaseSettings):
    """Everything chorus reads. Precedence: defaults < YAML (--config) < CHORUS_* env < flags."""

    model_config = SettingsConfigDict(
        env_prefix="CHORUS_",
        env_nested_delimiter="__",
        extra="forbid",
        yaml_file=None,
    )

    state_dir: Path = Field(Path(".chorus"), description="Everything a run writes lives here.")
    mlflow_tracking_uri: str | None = Field(
        None, description="Default: sqlite:///<state_dir>/mlflow.db"
    )
    prefect_api_url: str | None = Field(
        None, description="A Prefect server's API (http://host:4200/api); default: a temporary API per run, "
                          "its database under the state directory. Sets PREFECT_API_URL for chorus's processes."
    )
    export_root: Path | None = Field(
        None, description="A folder the tag and search flows may write their `out` file under, besides the state "
                          "directory; outside both, `out` is refused."
    )
    lock_timeout_s: float = Field(
        0.0, description="How long a run waits for the state lock; 0 refuses at once, -1 waits forever."
    )
    compute: ComputeSettings = Field(default_factory=ComputeSettings)
    demo: DemoSettings = Field(default_factory=DemoSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    labels: LabelSettings = Field(default_factory=LabelSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    evaluate: EvaluateSettings = Field(default_factory=EvaluateSettings)
    promote: PromoteSettings = Field(default_factory=PromoteSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    melody: MelodySettings = Field(default_factory=MelodySettings)
    personal: PersonalSettings = Field(default_factory=PersonalSettings)
    library: LibrarySettings = Field(default_factory=LibrarySettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    tasks: dict[str, LabelTask] = Field(default_factory=default_tasks, description="Tasks by name (chorus run --task).")
    services: ServicesSettings = Field(default_factory=ServicesSettings)
    orchestration: OrchestrationSettings = Field(default_factory=OrchestrationSettings)

    @model_validator(mode="before")
    @classmethod
    def _compute_keys_from_features(cls, data: Any) -> Any:
        """``features.dask_address``/``dask_workers``/``worker_memory_limit`` (before the compute
        section) are read as ``compute.address``/``workers``/``worker_memory_limit``, with a warning."""
        if not isinstance(data, dict) or not isinstance(data.get("features"), dict):
            return data
        moved = {old: new for old, new in MOVED_TO_COMPUTE.items() if old in data["features"]}
        if not moved:
            return data
        features = {k: v for k, v in data["features"].items() if k not in moved}
        given = data.get("compute")
        compute = dict(given.model_dump(exclude_unset=True) if isinstance(given, ComputeSettings) else given or {})
        for old, new in moved.items():
            compute.setdefault(new, data["features"][old])
        logging.getLogger("chorus.config").warning(
            "settings: %s moved to the compute section (%s)", ", ".join(f"features.{k}" for k in moved),
            ", ".join(f"compute.{v}" for v in moved.values()))
        return {**data, "features": features, "compute": compute}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: flags (init), then env, then the YAML file, then defaults.
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls))

    def for_task(self, name: str) -> ChorusSettings:
        """These settings aimed at one task: what trains (a single-label task: the style family of
        candidates on its column; a multi-label one: the tagger) and what the report describes."""
        if name not in self.tasks:
            raise ConfigError(f"task '{name}' is not defined; tasks: {', '.join(sorted(self.tasks))} (settings: tasks.<name>)")
        task = self.tasks[name]
        if task.kind == "single":
            train = {"task": task.column or name, "candidates": list(SINGLE_LABEL_CANDIDATES)}
        else:
            train = {"mood_task": name, "candidates": ["mood_tagger"]}
        if self.train.candidates:  # an explicit choice is never replaced
            train["candidates"] = list(self.train.candidates)
        train["split_column"] = task.split
        return self.model_copy(update={"train": self.train.model_copy(update=train),
                                       "evaluate": self.evaluate.model_copy(update={"subject": task.kind})})

    def multi_task(self) -> LabelTask:
        """The multi-label task the tagger trains on (train.mood_task; voted moods by default)."""
        return self.tasks.get(self.train.mood_task) or LabelTask(kind="multi", source="voted")

    def resolved(self) -> ChorusSettings:
        """A copy with the state directory made absolute (outputs never depend on the cwd)."""
        return self.model_copy(update={"state_dir": self.state_dir.expanduser().resolve()})

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{self.state_dir.expanduser().resolve() / 'mlflow.db'}"


def set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = target
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: '{key}' is not a section")
    node[keys[-1]] = value


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ``["train.epochs=3", "demo.scale=0.5"]`` into a nested dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. train.epochs=3")
        key, raw = pair.split("=", 1)
        set_dotted(out, key.strip(), yaml.safe_load(raw))
    return out


def load_settings(
    config_file: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> ChorusSettings:
    """Build the settings: defaults < YAML ``config_file`` < CHORUS_* env < ``overrides``."""
    if config_file is not None and not Path(config_file).is_file():
        raise ConfigError(f"{config_file}: configuration file not found")

    class _FromFile(ChorusSettings):
        model_config = SettingsConfigDict(yaml_file=str(config_file) if config_file else None)

    try:
        settings = _FromFile(**(overrides or {}))
        return ChorusSettings.model_validate(settings.model_dump()).resolved()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        source = f"{config_file}: " if config_file else ""
        raise ConfigError(f"{source}setting '{where}': {first['msg']}") from exc
