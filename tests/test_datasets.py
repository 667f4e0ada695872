"""Standard dataset adapters: parsing, splits and bad rows, through the real ingest stage."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from chorus import stages
from chorus.config import load_settings
from chorus.datasets.standard import from_gtzan, from_jamendo, from_mtat, stratified_split
from chorus.errors import InputError
from chorus.state import StateDir
from dataset_fixtures import GTZAN_GENRES, make_gtzan, make_jamendo, make_mtat


def _ingest(tmp_path, root, adapter, **ingest):
    settings = load_settings(overrides={"state_dir": str(tmp_path / "state"),
                                        "ingest": {"manifest": str(root), "adapter": adapter, **ingest}})
    stages.ingest_stage(settings)
    state = StateDir(settings.state_dir)
    return pd.read_parquet(state.tracks), pd.read_parquet(state.ingest_quarantine)


def test_mtat_reads_annotations_splits_by_folder_and_quarantines_bad_clips(tmp_path):
    root = make_mtat(tmp_path / "mtat")
    tracks, quarantine = _ingest(tmp_path, root, "mtat", top_tags=5)
    assert len(tracks) == 12 and tracks["codec"].str.startswith("MP3").all()
    by_folder = tracks.assign(folder=tracks["uri"].str.split("/").str[-2]).groupby("folder")["split"].unique()
    assert {f: list(s) for f, s in by_folder.items()} == {"0": ["train"], "a": ["train"], "c": ["valid"], "d": ["test"]}
    vocabulary = {t for tags in tracks["tags"] for t in tags.split(";") if t}
    assert vocabulary == {"guitar", "classical", "slow", "techno", "loud"}  # top 5: "piano" (once) is dropped
    first = tracks[tracks["clip_id"] == "0"].iloc[0]
    assert first["tags"] == "guitar;classical;slow"
    reasons = dict(zip(quarantine["uri"].str.split("/").str[-1], quarantine["reason"], strict=True))
    assert reasons == {"broken-empty.mp3": "empty", "bad-value.mp3": "bad_annotation"}
    bad = quarantine[quarantine["reason"] == "bad_annotation"].iloc[0]
    assert "line 15" in bad["detail"] and "'guitar' is '2'" in bad["detail"] and bad["manifest_row"] == 15


def test_mtat_split_files_override_the_folder_split(tmp_path):
    root = make_mtat(tmp_path / "mtat")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("0\n1\n2\n3\n4\n5\n6\n")
    (lists / "valid.txt").write_text("c/artist7-track-1.mp3\n")
    (lists / "test.txt").write_text("artist8-track-2.mp3\n9\n10\n11\n")
    candidates = from_mtat(root, 50, {s: str(lists / f"{s}.txt") for s in ("train", "valid", "test")})
    table = candidates.table.set_index("clip_id")
    assert table.loc["7", "split"] == "valid" and table.loc["8", "split"] == "test" and table.loc["0", "split"] == "train"
    assert set(candidates.rejected["reason"]) == {"not_in_split_files", "bad_annotation"}
    with pytest.raises(InputError, match="split must be one of"):
        from_mtat(root, 50, {"holdout": str(lists / "test.txt")})


def test_jamendo_reads_variable_tags_official_split_and_category(tmp_path):
    root = make_jamendo(tmp_path / "jamendo")
    tracks, quarantine = _ingest(tmp_path, root, "jamendo")
    assert len(tracks) == 12 and tracks["split"].value_counts().to_dict() == {"train": 4, "valid": 4, "test": 4}
    assert set(tracks["tags"]) == {"happy", "calm;relaxing"}  # mood/theme only, prefix removed
    assert tracks["uri"].str.contains("/audio/").all()
    assert tracks["track_id_source"].str.startswith("track_").all() and "artist_id" in tracks.columns
    details = quarantine.set_index("uri")["detail"]
    assert len(quarantine) == 3 and set(quarantine["reason"]) == {"bad_annotation"}
    assert "need 5 and at least one tag" in details["01/9001.mp3"]
    assert "DURATION 'long' is not a number" in details["01/9002.mp3"]
    assert "'happy' is not <category>---<tag>" in details["01/9003.mp3"]
    genre = from_jamendo(root, "genre").table
    assert set(genre["tags"]) == {"pop", "classical"}
    every = from_jamendo(root, "all").table
    assert "instrument---guitar" in every["tags"].iloc[0]
    with pytest.raises(InputError, match="official split folder not found"):
        from_jamendo(root, "genre", split="split-4")


def test_gtzan_random_split_is_stratified_and_warns(tmp_path, caplog):
    root = make_gtzan(tmp_path / "gtzan")
    with caplog.at_level(logging.WARNING):
        candidates = from_gtzan(root)
    assert "inflates accuracy" in caplog.text and "inflates accuracy" in candidates.notes[0]
    table = candidates.table
    assert sorted(table["genre"].unique()) == GTZAN_GENRES
    counts = table.groupby(["genre", "split"]).size().unstack()
    assert (counts["train"] == 3).all() and (counts["valid"] == 1).all() and (counts["test"] == 1).all()
    assert candidates.rejected["reason"].tolist() == ["bad_layout"]  # genres/blues/extra/stray.wav
    assert from_gtzan(root).table.equals(table)  # seeded: the same split every time


def test_gtzan_split_files_set_aside_unlisted_clips(tmp_path):
    root = make_gtzan(tmp_path / "gtzan")
    lists = tmp_path / "lists"
    lists.mkdir()
    listed = [f"{g}/{g}.{i:05d}.wav" for g in GTZAN_GENRES for i in range(4)]  # clip 4 of each genre is "faulty"
    (lists / "train.txt").write_text("\n".join(listed[0::2]))
    (lists / "valid.txt").write_text("\n".join(listed[1::4]))
    (lists / "test.txt").write_text("\n".join(listed[3::4]))
    tracks, quarantine = _ingest(tmp_path, root, "gtzan", split_files={s: str(lists / f"{s}.txt") for s in ("train", "valid", "test")})
    assert len(tracks) == 12 and set(tracks["genre"]) == set(GTZAN_GENRES)
    assert sorted(quarantine["reason"]) == ["bad_layout"] + ["not_in_split_files"] * 3


def test_stratified_split_keeps_each_label_in_proportion():
    labels = pd.Series(["a"] * 10 + ["b"] * 5)
    split = pd.Series(stratified_split(labels, (0.6, 0.2, 0.2), seed=1))
    assert split[labels == "a"].value_counts().to_dict() == {"train": 6, "valid": 2, "test": 2}
    assert split[labels == "b"].value_counts().to_dict() == {"train": 3, "valid": 1, "test": 1}


def test_tasks_read_labels_from_an_annotation_file_and_keep_their_vocabulary(tmp_path):
    from chorus.errors import ConfigError

    root = make_gtzan(tmp_path / "gtzan")
    tracks, _ = _ingest(tmp_path, root, "gtzan")
    annotations = tmp_path / "moods.csv"
    rows = [(f"gtzan/genres/{g}/{g}.{i:05d}.wav", "dark;loud" if g == "metal" else "calm") for g in GTZAN_GENRES for i in range(5)]
    pd.DataFrame(rows, columns=["uri", "feel"]).iloc[:-1].to_csv(annotations, index=False)  # one clip unannotated
    settings = load_settings(overrides={
        "state_dir": str(tmp_path / "state"),
        "ingest": {"manifest": str(root), "adapter": "gtzan"},
        "tasks": {"feel": {"kind": "multi", "source": "file", "file": str(annotations), "top_n": 2},
                  "genre": {"kind": "single", "column": "genre", "vocabulary": ["blues", "metal"]}},
    }).for_task("feel")
    truth = stages.mood_labels(settings, stages.training_tracks(settings))
    assert truth.vocabulary == ["calm", "dark"]  # the two most frequent in the train split
    assert len(truth.labels) == 14 and {tuple(v) for v in truth.labels.values()} == {("calm",), ("dark",)}
    with_labels = stages.training_tracks(settings)
    assert with_labels["feel"].notna().sum() == 14
    assert set(with_labels["genre"].dropna()) == {"blues", "metal"}  # classical is outside the task's vocabulary
    with pytest.raises(ConfigError, match="source=file needs file"):
        load_settings(overrides={"tasks": {"x": {"kind": "multi", "source": "file"}}})
    with pytest.raises(ConfigError, match="task 'nope' is not defined"):
        load_settings().for_task("nope")


def test_a_task_brings_its_own_split(tmp_path):
    root = make_gtzan(tmp_path / "gtzan")
    _ingest(tmp_path, root, "gtzan")
    annotations = tmp_path / "protocol.csv"
    rows = [(f"gtzan/genres/{g}/{g}.{i:05d}.wav", g, "test" if i == 0 else ("skip" if i == 1 else "train"))
            for g in GTZAN_GENRES for i in range(5)]
    pd.DataFrame(rows, columns=["uri", "genre_v2", "fold"]).to_csv(annotations, index=False)
    settings = load_settings(overrides={
        "state_dir": str(tmp_path / "state"), "ingest": {"manifest": str(root), "adapter": "gtzan"},
        "tasks": {"genre_v2": {"kind": "single", "source": "file", "file": str(annotations), "split": "fold"}},
    }).for_task("genre_v2")
    tracks = stages.training_tracks(settings)
    assert settings.train.task == "genre_v2" and settings.train.split_column == "fold"
    assert len(tracks) == 12  # "skip" is no split: those tracks sit out this task
    assert tracks.groupby("split").size().to_dict() == {"test": 3, "train": 9}
    assert (tracks.loc[tracks["split"] == "test", "uri"].str.endswith(".00000.wav")).all()
