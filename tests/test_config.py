"""Settings precedence: defaults < YAML file < CHORUS_* environment < flags."""

from __future__ import annotations

import pytest

from chorus.config import ComputeSettings, FeatureSettings, load_settings, parse_overrides
from chorus.errors import ConfigError


def test_defaults_apply_without_any_source():
    settings = load_settings()
    assert settings.train.epochs == 20
    assert settings.state_dir.name == ".chorus" and settings.state_dir.is_absolute()


def test_yaml_overrides_defaults(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epochs: 3\nfeatures:\n  n_mels: 64\n")
    settings = load_settings(cfg)
    assert settings.train.epochs == 3
    assert settings.features.n_mels == 64
    assert settings.train.batch_size == 32  # untouched keys keep defaults


def test_env_overrides_yaml(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epochs: 3\n  batch_size: 8\n")
    monkeypatch.setenv("CHORUS_TRAIN__EPOCHS", "5")
    settings = load_settings(cfg)
    assert settings.train.epochs == 5
    assert settings.train.batch_size == 8  # env set one key of the section, YAML keeps the other


def test_flags_override_env(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epochs: 3\n")
    monkeypatch.setenv("CHORUS_TRAIN__EPOCHS", "5")
    settings = load_settings(cfg, parse_overrides(["train.epochs=7", "state_dir=" + str(tmp_path / "s")]))
    assert settings.train.epochs == 7
    assert settings.state_dir == (tmp_path / "s").resolve()


def test_bad_setting_names_file_and_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epochs: -1\n")
    with pytest.raises(ConfigError, match=r"c.yaml: setting 'train.epochs'"):
        load_settings(cfg)


def test_unknown_key_is_refused(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match="epochz"):
        load_settings(cfg)


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_settings(tmp_path / "nope.yaml")


def test_config_hash_changes_with_outputs_not_with_workers():
    base = FeatureSettings()
    assert FeatureSettings(shard_size=3).config_hash() == base.config_hash()
    assert ComputeSettings(workers=8).config_hash() == ComputeSettings().config_hash()
    assert FeatureSettings(n_mels=64).config_hash() != base.config_hash()


def test_override_syntax_error():
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["train.epochs"])
