"""Ingest with real bad files: every rejected file lands in quarantine with its reason."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from chorus.config import IngestSettings
from chorus.datasets.adapters import candidates_for
from chorus.errors import InputError
from chorus.ingest import hash_split, ingest, stratified_hash_split
from chorus_bench.faults import overcount_ogg
from conftest import SR, tone, write_wav


@pytest.fixture()
def corpus(tmp_path):
    root = tmp_path / "corpus"
    good = write_wav(root / "good.wav", tone(4.0, 440))
    write_wav(root / "good2.wav", tone(4.0, 660))
    shutil.copy(good, root / "copy_of_good.wav")  # duplicate content
    (root / "zero.wav").write_bytes(b"")
    raw = (root / "good2.wav").read_bytes()
    (root / "truncated.wav").write_bytes(raw[: len(raw) // 2])
    (root / "text.wav").write_text("this is not audio at all " * 20)
    nan = tone(4.0)
    nan[100:200] = np.nan
    write_wav(root / "nan.wav", nan, subtype="FLOAT")
    write_wav(root / "silent.wav", np.zeros(4 * SR, np.float32))
    write_wav(root / "short.wav", tone(1.0))
    outside = write_wav(tmp_path / "outside.wav", tone(4.0, 300))
    rows = ["good.wav", "good2.wav", "copy_of_good.wav", "zero.wav", "truncated.wav", "text.wav",
            "nan.wav", "silent.wav", "short.wav", "../outside.wav", str(outside), "missing.wav", "s3://bucket/x.wav"]
    manifest = root / "manifest.csv"
    pd.DataFrame({"uri": rows, "label": ["a"] * len(rows)}).to_csv(manifest, index=False)
    return manifest


def test_bad_files_are_quarantined_with_their_reason(corpus):
    result = ingest(candidates_for(corpus), IngestSettings())
    reasons = {p.split("/")[-1]: r for p, r in zip(result.quarantine["uri"], result.quarantine["reason"], strict=True)}
    assert reasons == {
        "zero.wav": "empty",
        "truncated.wav": "truncated",
        "text.wav": "not_audio",
        "nan.wav": "non_finite",
        "silent.wav": "silent",
        "short.wav": "too_short",
        "outside.wav": "outside_root",  # both ../outside.wav and its absolute path
        "missing.wav": "missing",
        "x.wav": "scheme_not_allowed",
        "good.wav": "duplicate",  # copy_of_good.wav sorts first and is kept
    }
    assert (result.quarantine["reason"] == "outside_root").sum() == 2
    assert len(result.tracks) == 2
    assert len(result.tracks) + len(result.quarantine) == 13  # nothing disappears


def test_quarantine_rows_point_back_to_the_manifest(corpus):
    result = ingest(candidates_for(corpus), IngestSettings())
    empty = result.quarantine[result.quarantine["reason"] == "empty"].iloc[0]
    assert empty["manifest_row"] == 5  # header is row 1
    assert "zero bytes" in empty["detail"]
    dup = result.quarantine[result.quarantine["reason"] == "duplicate"].iloc[0]
    assert "copy_of_good.wav" in dup["detail"]


def test_good_tracks_have_content_ids_and_facts(corpus):
    tracks = ingest(candidates_for(corpus), IngestSettings()).tracks
    row = tracks[tracks["uri"].str.endswith("good2.wav")].iloc[0]
    assert len(row["track_id"]) == 16 and row["sha256"].startswith(row["track_id"])
    assert row["sample_rate"] == SR and row["channels"] == 1
    assert row["duration_s"] == pytest.approx(4.0)
    assert row["codec"] == "WAV/PCM_16"
    assert row["label"] == "a"
    assert row["split"] in {"train", "valid", "test"}


def test_allowed_scheme_is_not_quarantined_for_its_scheme(corpus):
    result = ingest(candidates_for(corpus), IngestSettings(allowed_schemes=["file", "memory"]))
    assert "scheme_not_allowed" in set(result.quarantine["reason"])  # s3 is still not allowed


def test_folder_per_label_layout(tmp_path):
    for label in ("blues", "jazz"):
        for i in range(2):
            write_wav(tmp_path / label / f"{label}.{i:05d}.wav", tone(3.5, 200 + 100 * i + (50 if label == "jazz" else 0)))
    result = ingest(candidates_for(tmp_path), IngestSettings())
    assert sorted(result.tracks["label"]) == ["blues", "blues", "jazz", "jazz"]
    assert set(result.tracks["source"]) == {"folder"}


def test_manifest_without_uri_column_is_refused(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("path,label\na.wav,x\n")
    with pytest.raises(InputError, match=r"m.csv: manifest needs a 'uri' column"):
        candidates_for(bad)


def test_hash_split_is_stable_and_roughly_proportional():
    ids = [f"{i:016x}" for i in range(2000)]
    splits = [hash_split(t, (0.6, 0.2, 0.2), 0) for t in ids]
    assert splits == [hash_split(t, (0.6, 0.2, 0.2), 0) for t in ids]
    assert 0.55 < splits.count("train") / len(ids) < 0.65


def test_small_labelled_sets_get_every_label_in_every_split_and_keep_their_splits():
    """A folder corpus without splits: each label is split on its own (a label of three tracks
    still has one in valid and one in test), and the same tracks get the same splits."""
    ids = [f"{i:016x}" for i in range(23)]
    labels = ["a"] * 12 + ["b"] * 8 + ["c"] * 3
    splits = stratified_hash_split(ids, labels, (0.6, 0.2, 0.2), 0)
    for label, n in (("a", 12), ("b", 8), ("c", 3)):
        mine = [s for s, lab in zip(splits, labels, strict=True) if lab == label]
        assert {"train", "valid", "test"} == set(mine), (label, mine)
        assert mine.count("train") >= n // 3
    shuffled = list(reversed(range(23)))
    again = stratified_hash_split([ids[i] for i in shuffled], [labels[i] for i in shuffled], (0.6, 0.2, 0.2), 0)
    assert again == [splits[i] for i in shuffled]


def test_compressed_counts_are_estimates_but_a_real_shortfall_is_truncated(tmp_path):
    """A Vorbis file that decodes a little short of its header's count plays to the end: kept,
    with the shortfall recorded; far short of it, it is quarantined as truncated. A WAV's count
    is exact: one frame short is truncated."""
    import soundfile as sf

    root = tmp_path / "corpus"
    root.mkdir()
    for name, extra in (("estimate.ogg", 5806), ("gutted.ogg", 10 * SR)):
        sf.write(root / name, tone(20.0, 440), SR, format="OGG", subtype="VORBIS")
        overcount_ogg(root / name, extra)
        assert sf.info(root / name).frames == 20 * SR + extra
    result = ingest(_manifest_of(root), IngestSettings())
    kept = result.tracks.set_index(result.tracks["uri"].str.rsplit("/", n=1).str[-1])
    assert list(kept.index) == ["estimate.ogg"] and 5000 < kept.loc["estimate.ogg", "frames_short"] <= 5806
    bad = result.quarantine.set_index(result.quarantine["uri"].str.rsplit("/", n=1).str[-1])
    assert bad.loc["gutted.ogg", "reason"] == "truncated" and "estimate" in bad.loc["gutted.ogg", "detail"]


def _manifest_of(root):
    manifest = root / "manifest.csv"
    pd.DataFrame({"uri": sorted(p.name for p in root.iterdir() if p.suffix == ".ogg")}).to_csv(manifest, index=False)
    return candidates_for(manifest)


def test_what_is_not_a_file_gets_a_reason_not_silence(tmp_path):
    """In a folder corpus: a directory named like audio, a symlink loop and a dangling symlink
    each get a quarantine row; the good file beside them is ingested."""
    label = tmp_path / "corpus" / "rock"
    write_wav(label / "good.wav", tone(4.0))
    (label / "album.wav").mkdir()
    (label / "loop.wav").symlink_to(label / "loop.wav")
    (label / "gone.wav").symlink_to(tmp_path / "deleted.wav")
    result = ingest(candidates_for(tmp_path / "corpus"), IngestSettings())
    assert result.tracks["uri"].str.endswith("good.wav").tolist() == [True]
    reasons = dict(zip(result.quarantine["uri"].str.rsplit("/", n=1).str[-1], result.quarantine["reason"], strict=True))
    assert reasons == {"album.wav": "not_a_file", "loop.wav": "symlink_loop", "gone.wav": "dangling_symlink"}


def test_rekeying_carries_every_forgotten_user_to_a_new_key(tmp_path):
    """`chorus rekey-forgotten`: digests made again under a new key from the source's ids; one no
    id matches (a user gone from the source) stays under its old key; nobody comes back."""
    import hashlib
    import json

    from chorus.ingest import drop_forgotten, forgotten_users, rekey_forgotten, remember_forgotten

    social = tmp_path / "social"
    social.mkdir()
    (social / "forgotten.json").write_text(json.dumps([hashlib.sha256(b"u1").hexdigest()]))  # plain, before keys
    remember_forgotten(social, "u2")
    before = forgotten_users(social)
    remember_forgotten(social, "gone")
    rekeyed, counts = rekey_forgotten(social, {"u1", "u2", "u3"})  # "gone" is no longer in the source
    assert counts == {"rekeyed": 2, "retired": 1}
    assert rekeyed.key != before.key and forgotten_users(social) == rekeyed
    assert not rekeyed.unsalted and before.digest("u2") not in rekeyed.digests  # the old key opens nothing new
    assert all(rekeyed.covers(u) for u in ("u1", "u2", "gone")) and not rekeyed.covers("u3")
    # the retired key lives in a private file of its own, never beside the digests it opens
    (retired_key, retired_digest), = rekeyed.retired
    assert retired_key == before.key.hex() and retired_key not in (social / "forgotten.json").read_text()
    assert retired_digest in (social / "forgotten.json").read_text()
    assert (social / "forgotten.retired-keys.json").stat().st_mode & 0o077 == 0
    tables = {"users": pd.DataFrame({"user_id": ["u1", "u2", "u3", "gone"]}),
              "follows": pd.DataFrame({"follower": ["u3"], "followee": ["gone"]}),
              "playlists": pd.DataFrame({"playlist_id": ["p1"], "owner": ["u3"]}),
              "playlist_tracks": pd.DataFrame({"playlist_id": ["p1"], "track_id": ["t1"]})}
    kept, _ = drop_forgotten(tables, rekeyed)
    assert kept["users"]["user_id"].tolist() == ["u3"] and kept["follows"].empty
    again, counts = rekey_forgotten(social, {"u1", "u2", "u3", "gone"})  # "gone" back in the source: carried over
    assert counts == {"rekeyed": 3, "retired": 0} and all(again.covers(u) for u in ("u1", "u2", "gone"))


def test_forgotten_users_are_kept_as_keyed_digests_and_an_older_plain_list_still_matches(tmp_path):
    import hashlib
    import json

    from chorus.ingest import drop_forgotten, forgotten_users, remember_forgotten

    social = tmp_path / "social"
    social.mkdir()
    (social / "forgotten.json").write_text(json.dumps([hashlib.sha256(b"u1").hexdigest()]))  # written before the key
    forgotten = remember_forgotten(social, "u2")
    recorded = (social / "forgotten.json").read_text()
    assert "u2" not in recorded and hashlib.sha256(b"u2").hexdigest() not in recorded  # a guessable id is not a lookup away
    assert (social / "forgotten.key").stat().st_mode & 0o077 == 0
    assert forgotten_users(social) == forgotten and forgotten.covers("u1") and forgotten.covers("u2")
    tables = {"users": pd.DataFrame({"user_id": ["u1", "u2", "u3"]}),
              "follows": pd.DataFrame({"follower": ["u3", "u1"], "followee": ["u2", "u3"]}),
              "playlists": pd.DataFrame({"playlist_id": ["p1", "p2"], "owner": ["u2", "u3"]}),
              "playlist_tracks": pd.DataFrame({"playlist_id": ["p1", "p2"], "track_id": ["t1", "t2"]})}
    kept, dropped = drop_forgotten(tables, forgotten)
    assert kept["users"]["user_id"].tolist() == ["u3"] and kept["follows"].empty
    assert kept["playlist_tracks"]["track_id"].tolist() == ["t2"] and dropped["users"] == 2


def test_a_remote_object_streams_in_under_a_size_cap(tmp_path):
    """A remote object is copied a MiB at a time; one over ingest.max_remote_bytes is refused as
    too_large, with no partial copy left in the cache, and the smaller one is ingested."""
    import fsspec

    from chorus.audio import AudioProblem
    from chorus.ingest import fetch_remote

    memory = fsspec.filesystem("memory")
    small, large = write_wav(tmp_path / "small.wav", tone(4.0)), write_wav(tmp_path / "large.wav", tone(40.0))
    memory.pipe({"/bucket/small.wav": small.read_bytes(), "/bucket/large.wav": large.read_bytes()})
    cap = small.stat().st_size + 1024
    cache = tmp_path / "cache"
    assert fetch_remote("memory://bucket/small.wav", cache, cap).read_bytes() == small.read_bytes()
    with pytest.raises(AudioProblem, match="too_large"):
        fetch_remote("memory://bucket/large.wav", cache, cap)
    assert len(list(cache.iterdir())) == 1
    pd.DataFrame({"uri": ["memory://bucket/small.wav", "memory://bucket/large.wav"]}).to_csv(tmp_path / "m.csv", index=False)
    result = ingest(candidates_for(tmp_path / "m.csv"), IngestSettings(allowed_schemes=["file", "memory"], max_remote_bytes=cap),
                    cache_dir=tmp_path / "cache2")
    assert len(result.tracks) == 1 and list(result.quarantine["reason"]) == ["too_large"]


def test_a_refused_file_is_named_with_its_rule_never_its_contents(tmp_path):
    """A file a caller names that is not a manifest: the error names it and the rule it broke, and
    echoes nothing of it into the logs (a deployment run's errors reach the Prefect UI)."""
    secret = tmp_path / "not-a-manifest.csv"
    secret.write_text("root:x:0:0:root:/root:/bin/bash,token=s3cr3t\n1,2\n")
    with pytest.raises(InputError) as refused:
        candidates_for(secret)
    assert str(secret) in str(refused.value) and "needs a 'uri' column" in str(refused.value)
    assert "s3cr3t" not in str(refused.value) and "root:x" not in str(refused.value)
