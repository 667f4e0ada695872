"""Tag mapping and global truth by plain averaging."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from chorus import MOODS
from chorus.errors import ConfigError
from chorus.social.graph import build_graph
from chorus.social.protocol import mood_rank
from chorus.social.tags import TagMapper, normalise_tag
from chorus.social.voting import tag_matrix, top_k_labels, truth_table, user_song_votes, weighted_vote


def test_normalisation_handles_case_whitespace_and_unicode():
    assert normalise_tag("  Calm\u00a0 ") == "calm"
    assert normalise_tag("ＪＯＹ") == "joy"
    assert normalise_tag("Miss   You") == "miss you"


def test_articles_example_vector():
    mapper = TagMapper.load()
    vec = mapper.vector(["moved", "quiet"])
    assert vec.tolist() == [1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]


def test_off_vocabulary_tags_are_discarded_and_counted():
    mapper = TagMapper.load()
    vec = mapper.vector(["Rock", "rock ", "regional", "happy"])
    assert vec[MOODS.index("joy")] == 1 and vec.sum() == 1
    assert mapper.discarded == {"rock": 2, "regional": 1}


def test_synonym_table_is_overridable_and_checked(tmp_path):
    table = tmp_path / "syn.yaml"
    table.write_text("joy: [yay]\n")
    assert TagMapper.load(table).vector(["YAY"])[MOODS.index("joy")] == 1
    table.write_text("glee: [yay]\n")
    with pytest.raises(ConfigError, match="'glee' is not one of the 12 moods"):
        TagMapper.load(table)


def test_global_truth_averages_users_and_unions_a_users_playlists():
    playlists = pd.DataFrame({
        "playlist_id": ["p1", "p2", "p3"],
        "owner": ["u1", "u1", "u2"],
        "tags": [["calm"], ["sad"], ["calm", "rock"]],
    })
    members = pd.DataFrame({"playlist_id": ["p1", "p2", "p3", "p3", "gone"], "track_id": ["s1", "s1", "s1", "s2", "s3"]})
    votes = user_song_votes(playlists, members, TagMapper.load())
    # (u1,s1) once although in two playlists; a row naming no playlist is no vote
    assert votes.pairs.to_dict("list") == {"user_id": ["u1", "u2", "u2"], "track_id": ["s1", "s1", "s2"]}
    assert votes.vectors[0].tolist() == [m in ("quiet", "sadness") for m in MOODS]
    graph = build_graph(pd.DataFrame({"user_id": ["u1", "u2"]}), pd.DataFrame({"follower": [], "followee": []})).graph
    tags = tag_matrix(votes, graph)
    everyone = __import__("scipy.sparse", fromlist=["csr_matrix"]).csr_matrix(np.ones((1, 2), np.float32))
    truth = truth_table(weighted_vote(everyone, tags), ["global"], tags, "top_k", 1, 0.5).set_index("track_id")
    assert truth.loc["s1", "score_quiet"] == 1.0  # both users
    assert truth.loc["s1", "score_sadness"] == 0.5  # one of two users
    assert truth.loc["s1", "weight"] == 2
    assert truth.loc["s1", "labels"] == ["quiet"]
    assert truth.loc["s2", "labels"] == ["quiet"]


def test_top_k_ignores_zero_scores():
    scores = np.zeros((1, 12), np.float32)
    scores[0, 3] = 0.4
    assert top_k_labels(scores, 3) == [["warmth"]]


def test_a_moods_rank_breaks_ties_by_vocabulary_order_as_top_k_labels_does():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, size=(500, 12)).astype(np.float32) / 2  # many ties
    mood = rng.integers(0, 12, size=500)
    order = np.argsort(-scores, axis=1, kind="stable")
    assert mood_rank(scores, mood).tolist() == np.argmax(order == mood[:, None], axis=1).tolist()
