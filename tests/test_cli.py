"""The command line: settings flags, and errors as one clear line."""

from __future__ import annotations

import json

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
    assert out.returncode == 3  # bad settings
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert "bad.yaml: setting 'features.n_mels'" in lines[0]
    assert "Traceback" not in out.stderr


def test_stage_without_inputs_names_what_is_missing(tmp_path):
    out = run("--state-dir", str(tmp_path / "empty"), "train", cwd=tmp_path)
    assert out.returncode == 3  # missing input
    assert "tracks.parquet: no tracks table: run `chorus ingest` first" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_command_as_a_spawned_workers_main_imports_no_heavy_library():
    """Dask's local workers are spawned: each first runs its parent's main script (here the
    ``chorus`` command) as ``__mp_main__``. That must not import the command line's libraries,
    which would cost every worker seconds of start and hundreds of MiB of its memory limit."""
    import shutil
    import subprocess
    import sys

    script = shutil.which("chorus", path=str(__import__("pathlib").Path(sys.executable).parent))
    probe = ("import runpy, sys; runpy.run_path(sys.argv[1], run_name='__mp_main__'); "
             "print(sorted(m for m in ('prefect', 'mlflow', 'torch', 'typer', 'chorus_ops.cli') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe, script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_global_options_work_after_the_command_and_the_version_prints(tmp_path):
    after = run("config", "--state-dir", str(tmp_path / "s"), "--set", "train.epochs=2", cwd=tmp_path)
    assert after.returncode == 0, after.stderr
    assert "epochs: 2" in after.stdout and str(tmp_path / "s") in after.stdout
    version = run("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("chorus ")


def test_usage_errors_exit_2_and_list_the_choices(tmp_path):
    unknown = run("config", "--no-such-option", cwd=tmp_path)
    assert unknown.returncode == 2 and "No such option" in unknown.stderr
    bad_choice = run("search", "--like", "x.wav", "--mode", "fuzzy", cwd=tmp_path)
    assert bad_choice.returncode == 2
    assert all(choice in bad_choice.stderr for choice in ("hash", "semantic", "rerank")), bad_choice.stderr


def test_the_listed_choices_are_the_settings_choices():
    """--profile and --dataset list what the settings and the adapters accept (no drift)."""
    from typing import get_args

    from chorus.config import PROFILES
    from chorus.datasets.adapters import DATASETS
    from chorus_ops.cli import Dataset, Profile

    literal_of = {name: [a for a in get_args(get_args(alias)[0]) if a is not type(None)] for name, alias in
                  (("profile", Profile), ("dataset", Dataset))}
    assert set(get_args(literal_of["profile"][0])) == set(PROFILES)
    assert set(get_args(literal_of["dataset"][0])) == set(DATASETS)


def test_a_model_is_named_the_way_mlflow_names_it():
    import pytest

    from chorus.errors import InputError
    from chorus.registry import parse_model_ref

    assert parse_model_ref("models:/chorus-style@champion") == ("chorus-style", "champion")
    assert parse_model_ref("models:/chorus-style/3") == ("chorus-style", 3)
    assert parse_model_ref("chorus-style@challenger") == ("chorus-style", "challenger")
    assert parse_model_ref("chorus-style/2") == ("chorus-style", 2)
    assert parse_model_ref("chorus-style", "previous") == ("chorus-style", "previous")
    for bad in ("models:/chorus-style", "models:/", "chorus-style/latest", "@champion"):
        with pytest.raises(InputError, match="not a model name"):
            parse_model_ref(bad)


def test_an_interrupted_run_exits_130_promptly(tmp_path):
    """kill -INT during `chorus run`: the runs end Crashed and the command exits 130 (never 0) within
    its grace period, whatever the interrupt left behind."""
    import signal
    import subprocess
    import sys
    import time

    process = subprocess.Popen([sys.executable, "-m", "chorus_ops", "--state-dir", str(tmp_path / "state"), "run"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(12)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-3000:]
    assert time.monotonic() - sent < 20
    assert "interrupted" in stderr


def test_a_drift_alarm_exits_5_and_no_alarm_0(monkeypatch):
    """`chorus drift` in a cron job: the alarm is the exit status, not only a word in the output."""
    from typer.testing import CliRunner

    from chorus_ops import cli

    def summary(alarm: bool):
        return lambda *args, **kwargs: {"stage": "drift", "skipped": False, "outputs": {"report": "/tmp/drift.html"},
                                        "counts": {"alarm": alarm, "drifted_share": 0.5 if alarm else 0.0,
                                                   "drifted": ["loudness"] if alarm else [], "batch": "12 tracks"}}

    monkeypatch.setattr(cli, "run_flow", summary(True))
    alarmed = CliRunner().invoke(cli.app, ["drift", "--json"])
    assert alarmed.exit_code == 5 and json.loads(alarmed.stdout)["counts"]["alarm"] is True
    monkeypatch.setattr(cli, "run_flow", summary(False))
    assert CliRunner().invoke(cli.app, ["drift"]).exit_code == 0


def test_listings_print_one_json_document_with_json():
    """`--json` on a command that prints results: one JSON document on stdout, nothing else there."""
    from typer.testing import CliRunner

    from chorus_ops import cli

    listed = CliRunner().invoke(cli.app, ["candidates", "--json"])
    assert listed.exit_code == 0
    candidates = json.loads(listed.stdout)
    assert candidates["short_chunk"]["profiles"] == ["default", "full"] and "musicnn_msd" in candidates["musicnn_probe"]["needs"]
