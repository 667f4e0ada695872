"""The demo corpus: deterministic from its seed, with planted moods and a crowd that tags them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from chorus.config import DemoSettings
from chorus.datasets.demo import generate_demo, perception_matrices
from chorus.io import file_sha256
from conftest import TINY_DEMO


@pytest.fixture(scope="module")
def two_renders(tmp_path_factory):
    """Two renders of the same settings, each with an empty render cache of its own."""
    settings = DemoSettings(**TINY_DEMO, render_cache=tmp_path_factory.mktemp("cache-a"))
    a = generate_demo(settings, tmp_path_factory.mktemp("a"))
    b = generate_demo(settings.model_copy(update={"render_cache": tmp_path_factory.mktemp("cache-b")}),
                      tmp_path_factory.mktemp("b"))
    return settings, a, b


def test_same_seed_gives_same_manifest_and_content(two_renders):
    _, a, b = two_renders
    ma, mb = pd.read_csv(a.manifest), pd.read_csv(b.manifest)
    pd.testing.assert_frame_equal(ma, mb)
    for uri, digest in zip(ma["uri"], ma["sha256"], strict=True):
        assert file_sha256(a.root / uri) == digest == file_sha256(b.root / uri)
    for name in ("users", "follows", "playlists", "playlist_tracks"):
        assert (a.social_dir / f"{name}.csv").read_text() == (b.social_dir / f"{name}.csv").read_text()


def test_manifest_has_styles_moods_and_splits(two_renders):
    settings, a, _ = two_renders
    manifest = pd.read_csv(a.manifest)
    assert sorted(manifest["style"].unique()) == sorted(settings.styles)
    assert (manifest.groupby("style").size() == settings.tracks_per_style).all()
    assert set(manifest["split"]) == {"train", "valid", "test"}
    assert manifest["mood"].notna().all()


def test_crowd_tags_are_messy_like_real_users(two_renders):
    _, a, _ = two_renders
    tags = ";".join(pd.read_csv(a.social_dir / "playlists.csv")["tags"])
    users = pd.read_csv(a.social_dir / "users.csv")
    assert users["user_id"].str.match(r"^u[0-9a-f]{10}$").all()  # opaque ids
    assert any(t.strip().lower() in {"rock", "regional", "vibes", "workout", "2000s", "road trip", "study"} for t in tags.split(";"))
    assert tags != tags.lower()  # mixed case reaches the data


def test_a_new_state_directory_takes_its_clips_from_the_render_cache(two_renders, tmp_path):
    settings, a, _ = two_renders
    assert settings.render_cache is not None
    cached = sorted(settings.render_cache.rglob("*.flac"))
    assert len(cached) == a.tracks
    again = generate_demo(settings, tmp_path / "again")
    pd.testing.assert_frame_equal(pd.read_csv(again.manifest), pd.read_csv(a.manifest))
    assert sorted(settings.render_cache.rglob("*.flac")) == cached  # nothing rendered anew

    # what decides a clip's samples names its entry: longer clips are rendered, not taken
    longer = settings.model_copy(update={"clip_seconds": TINY_DEMO["clip_seconds"] + 1, "styles": ["bach"],
                                         "tracks_per_style": 2})
    rendered = pd.read_csv(generate_demo(longer, tmp_path / "longer").manifest)
    assert len(list(settings.render_cache.rglob("*.flac"))) == len(cached) + len(rendered)


def test_different_seed_changes_the_corpus(tmp_path):
    settings = DemoSettings(**{**TINY_DEMO, "styles": ["essenFolksong"], "tracks_per_style": 2, "users": 8})
    one = pd.read_csv(generate_demo(settings, tmp_path / "1").manifest)
    two = pd.read_csv(generate_demo(settings.model_copy(update={"seed": 8}), tmp_path / "2").manifest)
    assert one["sha256"].tolist() != two["sha256"].tolist()


def test_uniform_perception_is_the_negative_control():
    rng = np.random.default_rng(0)
    varied = perception_matrices(DemoSettings(communities=3), rng)
    alike = perception_matrices(DemoSettings(communities=3, uniform_perception=True), np.random.default_rng(0))
    assert not np.allclose(varied[0], varied[1])
    assert np.allclose(alike[0], alike[1]) and np.allclose(alike[1], alike[2])
    assert np.allclose(varied.sum(axis=2), 1.0)


class _Planted:
    """Unpickling this creates ``witness``: proof that a pickle was loaded."""

    def __init__(self, witness) -> None:
        self.witness = witness

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (self.witness,))


def test_rendering_never_loads_music21s_shared_pickle_cache(tmp_path):
    """music21 caches parsed scores as pickles in a scratch folder any local user can write
    (/tmp/music21); a pickle planted there for a work the demo renders is never loaded."""
    import zlib
    from pickle import dumps

    from music21.converter import PickleFilter

    from chorus.datasets.render import Renderer, default_soundfont, list_works

    work = list_works("bach")[0]
    _, _, cache = PickleFilter(work.path, False, work.number).status()
    assert cache is not None
    witness = tmp_path / "unpickled"
    kept = cache.read_bytes() if cache.exists() else None
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(zlib.compress(dumps(_Planted(witness))))
    try:
        midi = Renderer(default_soundfont(), 22050).midi_from_work(work, 4)
    finally:
        cache.unlink(missing_ok=True)
        if kept is not None:
            cache.write_bytes(kept)
    assert midi.startswith(b"MThd") and not witness.exists()
