"""The command line: settings flags, and errors as one clear line."""

from __future__ import annotations

from conftest import run_chorus as run


def test_flags_reach_the_resolved_settings(tmp_path):
    out = run("--state-dir", str(tmp_path / "s"), "--set", "train.epochs=4", "config", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "epochs: 4" in out.stdout
    assert str(tmp_path / "s") in out.stdout


def test_bad_config_is_one_line_without_traceback(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("features:\n  n_mels: many\n")
    out = run("--config", str(cfg), "config", cwd=tmp_path)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert "bad.yaml: setting 'features.n_mels'" in lines[0]
    assert "Traceback" not in out.stderr


def test_stage_without_inputs_names_what_is_missing(tmp_path):
    out = run("--state-dir", str(tmp_path / "empty"), "train", cwd=tmp_path)
    assert out.returncode == 2
    assert "tracks.parquet: no tracks table: run `chorus ingest` first" in out.stderr
    assert "Traceback" not in out.stderr
