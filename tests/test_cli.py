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
