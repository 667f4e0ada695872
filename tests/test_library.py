"""Your own music: a library of MP3, M4A, Ogg (Opus), FLAC and WAV files in Artist/Album folders,
made at test time, run through ``chorus run --library`` and used from the shell and from Python
with no trained model; every format decodes; nothing disappears silently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chorus.state import StateDir
from conftest import SR, run_chorus, tone, write_encoded, write_wav


def _phrase(seed: int, seconds: float = 8.0) -> np.ndarray:
    """A few seconds of notes and noise, different for each seed."""
    rng = np.random.default_rng(seed)
    notes = [tone(seconds / 8, float(f), amp=0.25) for f in rng.choice([196, 220, 262, 294, 330, 392, 440, 523], 8)]
    y = np.concatenate(notes)
    return (y + rng.normal(0, 0.02 * (seed % 3), y.size)).astype(np.float32)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """(library folder, state directory, chorus run --library --json's stdout document)."""
    root = tmp_path_factory.mktemp("library")
    folder, state = root / "music", root / "state"
    same = _phrase(1)
    write_encoded(folder / "Artist A" / "Album 1" / "one.mp3", same)
    write_encoded(folder / "Artist A" / "Album 1" / "one again.m4a", same)  # the same audio in another format
    write_encoded(folder / "Artist B" / "Album 2" / "three.ogg", _phrase(2))
    write_encoded(folder / "Artist B" / "Album 2" / "four.flac", _phrase(3)[::-1].copy())
    write_wav(folder / "loose.wav", _phrase(4))  # directly in the root
    (folder / "Artist B" / "Album 2" / "broken.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A " + b"\x00" * 64)
    (folder / "Artist B" / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0not audio")
    done = run_chorus("--state-dir", str(state), "run", "--library", str(folder), "--json", cwd=root, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    # stderr is not a terminal here: each stage says, in one plain line, that it started and ended
    for line in ("ingest started", "features (musicnn) started (1 shards)", "features (musicnn) 100% (1/1 shards)",
                 "library started", "library done in"):
        assert line in done.stderr, done.stderr[-4000:]
    return folder, state, json.loads(done.stdout)  # stdout is one JSON document: logs went to stderr


def test_every_file_is_tagged_indexed_or_quarantined_with_its_reason(library):
    folder, state, summary = library
    own = StateDir(state / "library")
    tracks = pd.read_parquet(own.data / "tracks.parquet")
    assert sorted(Path(u).name for u in tracks["uri"]) == ["four.flac", "loose.wav", "one again.m4a", "one.mp3", "three.ogg"]
    assert "label" not in tracks.columns  # an unlabelled library needs no labels
    refused = pd.read_parquet(own.ingest_quarantine)
    assert dict(zip(refused["uri"].map(lambda u: Path(u).name), refused["reason"], strict=True)) == {
        "broken.m4a": "unreadable", "cover.jpg": "not_audio"}
    counts = summary["library"]["counts"]
    assert counts == {"tracks": 5, "indexed": 5, "taggers": 2, "quarantined": 2}
    tags = pd.read_parquet(summary["library"]["outputs"]["tags"])
    assert len(tags) == 10 and set(tags["tagger"]) == {"musicnn_msd", "musicnn_mtt"}
    assert all(len(t) == 5 for t in tags["tags"])
    # the same audio as MP3 and as M4A: each is the other's nearest track (from Python, no trained model)
    import chorus.api as api

    hits = api.search(folder / "Artist A" / "Album 1" / "one.mp3", k=2, library=True, state_dir=state)
    assert [Path(u).name for u in hits["uri"]] == ["one.mp3", "one again.m4a"]


def test_a_second_run_finds_everything_current(library):
    """The stages of a library run skip when their outputs carry their inputs' keys."""
    from chorus import stages
    from chorus.config import ChorusSettings

    folder, state, _ = library
    own = stages.library_settings(ChorusSettings(state_dir=state, library={"folder": str(folder)}))
    assert stages.ingest_stage(own).skipped and stages.library_stage(own).skipped


def test_tag_from_the_shell_needs_no_training_and_strict_refusals_exit_5(library, tmp_path):
    folder, state, _ = library
    broken = folder / "Artist B" / "Album 2" / "broken.m4a"
    done = run_chorus("--state-dir", str(state), "tag", "--library", str(folder / "loose.wav"), str(broken),
                      "--top-n", "3", "--json", "--strict", cwd=tmp_path)
    assert done.returncode == 5, done.stderr[-3000:]
    files = json.loads(done.stdout)["files"]
    tagged = [f for f in files if not f["problem"]]
    assert {f["model"] for f in tagged} == {"chorus-musicnn-msd", "chorus-musicnn-mtt"} and all(len(f["labels"]) == 3 for f in tagged)
    assert {f["problem"].split(":")[0] for f in files if f["problem"]} == {"unreadable"}


def test_python_api_tags_embeds_and_searches(library, monkeypatch):
    """``chorus.api`` from Python, its docstring examples run as doctests on this library."""
    import doctest

    import chorus.api as api

    folder, state, _ = library
    monkeypatch.setenv("CHORUS_STATE_DIR", str(state))
    song = str(folder / "Artist A" / "Album 1" / "one again.m4a")
    tags = api.tag(song)
    assert len(tags) == 5 and list(tags.values()) == sorted(tags.values(), reverse=True)
    assert api.embed(song).shape == api.embed(str(folder / "loose.wav")).shape
    with pytest.raises(Exception, match="broken.m4a"):
        api.tag(folder / "Artist B" / "Album 2" / "broken.m4a")
    # a registered tagger by MLflow's URI
    assert set(api.tag(folder / "loose.wav", "models:/chorus-musicnn-mtt@champion")) <= set(api.load_model(
        "models:/chorus-musicnn-mtt@champion").labels)
    result = doctest.testmod(api, extraglobs={"song": song, "np": np}, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8 and result.failed == 0


def test_catalogue_page_in_headless_chromium(library):
    """The catalogue lists every track with its tags, its nearest tracks and a player for the local
    file; the filter box narrows it; nothing is requested but the page and the library's files."""
    from playwright.sync_api import sync_playwright

    folder, _, summary = library
    page_path = Path(summary["library"]["outputs"]["catalogue"])
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: `make test` installs it (infra/local/install-system-packages.sh --test)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(page_path.as_uri())
        rows = page.locator("tr.track")
        assert rows.count() == 5
        players = page.evaluate("Array.from(document.querySelectorAll('audio')).map(a => a.getAttribute('src'))")
        assert sorted(Path(p.removeprefix("file://")).name for p in players) == sorted(
            ["four.flac", "loose.wav", "one%20again.m4a", "one.mp3", "three.ogg"])
        assert page.locator("tr.track .tagger").count() == 10
        assert all(rows.nth(i).locator(".neighbours li").count() == 4 for i in range(5))
        page.fill("#filter", "one again")
        assert page.evaluate("Array.from(document.querySelectorAll('tr.track')).filter(r => !r.hidden).length") == 1
        browser.close()
    assert problems == []
    assert str(folder) in page_path.read_text()


@pytest.mark.parametrize("suffix", [".m4a", ".opus", ".mp3", ".flac", ".ogg", ".wav"])
def test_every_format_decodes_to_the_same_tune(tmp_path, suffix):
    """Made by FFmpeg at test time: AAC in M4A and Opus go through PyAV, the rest through libsndfile."""
    from chorus.audio import load_mono, probe

    y = tone(3.0, 440.0)
    path = write_encoded(tmp_path / f"tone{suffix}", y)
    info = probe(path)
    decoded = load_mono(path, SR)
    assert abs(info.duration_s - 3.0) < 0.1 and abs(decoded.size / SR - 3.0) < 0.1
    spectrum = np.abs(np.fft.rfft(decoded[SR // 2: SR // 2 + SR]))
    assert abs(np.argmax(spectrum) - 440) <= 2  # 1 Hz bins


@pytest.mark.parametrize(("label_from", "labels"), [
    ("top", {"Artist A/Album 1/a.wav": "Artist A", "Artist A/b.wav": "Artist A"}),
    ("parent", {"Artist A/Album 1/a.wav": "Album 1", "Artist A/b.wav": "Artist A"}),
    ("grandparent", {"Artist A/Album 1/a.wav": "Artist A"}),
    ("none", {"Artist A/Album 1/a.wav": None, "Artist A/b.wav": None, "c.wav": None}),
])
def test_folder_labels_by_layout_and_files_without_one_are_refused(tmp_path, label_from, labels):
    from chorus.datasets.adapters import from_folder

    for name in ("Artist A/Album 1/a.wav", "Artist A/b.wav", "c.wav", ".hidden/d.wav"):
        write_wav(tmp_path / name, tone(0.5))
    candidates = from_folder(tmp_path, label_from)
    table = candidates.table
    got = {u: (table.loc[i, "label"] if "label" in table.columns else None) for i, u in table["uri"].items()}
    assert got == labels
    refused = set(candidates.rejected["uri"]) if candidates.rejected is not None else set()
    assert refused == {"Artist A/Album 1/a.wav", "Artist A/b.wav", "c.wav"} - set(labels)
    assert candidates.rejected is None or set(candidates.rejected["reason"]) == {"no_label"}
