"""`chorus gc`: what no setting or registered model refers to is listed, and removed only when asked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from chorus.config import ChorusSettings
from chorus.housekeeping import find_garbage, remove
from chorus.state import StateDir
from conftest import run_chorus


def _feature_set(root, name, shards=("shard-a.parquet",), served=None):
    folder = root / name
    folder.mkdir(parents=True)
    for shard in shards:
        (folder / shard).write_bytes(b"x" * 1000)
    (folder / "index.json").write_text(json.dumps({"shards": list(served if served is not None else shards)}))
    return folder


def test_unreferenced_feature_sets_and_leftovers_are_found_and_removed(tmp_path):
    settings = ChorusSettings(state_dir=tmp_path / "state")
    root = StateDir(settings.state_dir).features
    current = _feature_set(root, settings.features.config_hash(), ("shard-a.parquet", "shard-old.parquet"),
                           served=["shard-a.parquet"])
    (current / ".shard-b.parquet.123.tmp").write_bytes(b"partial")
    registered = _feature_set(root, "f" * 16)
    orphan = _feature_set(root, "0" * 16)
    # a block extraction's scratch: one whose worker was killed, one whose worker is still extracting
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    scratch = tmp_path / "tmp"
    killed, running = scratch / f"chorus-long-{gone.stdout.strip()}-x1", scratch / f"chorus-long-{os.getpid()}-x2"
    for folder in (killed, running):
        folder.mkdir(parents=True)
        (folder / "samples.f32").write_bytes(b"\0" * 4096)

    garbage = find_garbage(settings, registered_feature_hashes={"f" * 16}, scratch_root=scratch)
    paths = {g.path for g in garbage}
    assert paths == {orphan, current / "shard-old.parquet", current / ".shard-b.parquet.123.tmp", killed}
    assert all(g.reason for g in garbage)
    assert orphan.exists()  # finding is not removing

    remove(garbage)
    assert not orphan.exists() and registered.exists() and (current / "shard-a.parquet").exists()
    assert not killed.exists() and running.exists()
    assert find_garbage(settings, {"f" * 16}, scratch_root=scratch) == []


def test_gc_command_is_a_dry_run_unless_told(tmp_path, monkeypatch):
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # what other processes left in the system's is not this test's
    settings = ChorusSettings(state_dir=tmp_path / "state")
    orphan = _feature_set(StateDir(settings.state_dir).features, "0" * 16)
    gc = ("--state-dir", str(settings.state_dir), "gc")
    dry = run_chorus(*gc, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "would be removed" in dry.stdout and orphan.exists()
    wet = run_chorus(*gc, "--delete", cwd=tmp_path)
    assert wet.returncode == 0, wet.stderr
    assert "removed 1 item" in wet.stdout and not orphan.exists()


def test_index_and_remote_cache_leftovers_are_found(tmp_path):
    import numpy as np

    from chorus.search import SearchIndex
    from chorus.search.index import index_versions

    settings = ChorusSettings(state_dir=tmp_path / "state")
    state = StateDir(settings.state_dir)
    rng = np.random.default_rng(0)
    index = SearchIndex.build(np.array([f"t{i}" for i in range(20)]), rng.normal(size=(20, 8)),
                              np.where(rng.normal(size=(20, 16)) >= 0, 1.0, -1.0), {"name": "m"})
    folder = state.search / "m-v1+h-v1"
    for _ in range(3):  # each swap keeps the current version and the one before
        index.save(folder)
    old_version = state.search / ".m-v1+h-v1.v1"  # a whole version older than the two a swap keeps
    shutil.copytree(index_versions(folder)[0], old_version)
    for killed in (".m-v1+h-v1.v5", f".m-v1+h-v1.v{10**20}"):  # builds killed before their swap (the newest too)
        (state.search / killed).mkdir()
        (state.search / killed / "tracks.parquet").write_bytes(b"partial")
    (state.search / ".m-v1+h-v1.link-99").symlink_to("nowhere")
    state.remote_cache.mkdir(parents=True)
    (state.remote_cache / ".abc.flac.7.tmp").write_bytes(b"half a download")
    found = {g.path.name: g.reason for g in find_garbage(settings, set())}
    versions = [p.name for p in index_versions(folder)]
    assert [name for name, r in found.items() if "no link names" in r] == [old_version.name]
    assert {name for name, r in found.items() if "killed save" in r} == {".m-v1+h-v1.v5", f".m-v1+h-v1.v{10**20}"}
    assert set(versions[-2:]).isdisjoint(found)
    assert "interrupted index swap" in found[".m-v1+h-v1.link-99"] and "interrupted download" in found[".abc.flac.7.tmp"]
    remove(find_garbage(settings, set()))
    assert SearchIndex.load(folder).meta["tracks"] == 20 and len(list(state.search.glob(".m-v1+h-v1.v*"))) == 2
