"""Weighted voting over the follow graph: graph rules, BFS distances, weights, the vote itself
against the pinned naive reference, fallbacks, target selection, rejects, and the article's
protocol on the demo crowd (personal beats global; the negative control shows no margin)."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from chorus import MOODS
from chorus.config import DemoSettings, LabelSettings
from chorus.reference import naive_personal_truth
from chorus.social.graph import build_graph, hop_distances, hop_weights
from chorus.social.voting import (
    build_truths,
    personal_truths,
    select_targets,
    tag_matrix_from_rows,
)


def _random_social(n=300, m=1500, rows=3000, songs=40, seed=0):
    rng = np.random.default_rng(seed)
    users = pd.DataFrame({"user_id": [f"u{i}" for i in range(n)], "culture": rng.choice(["a", "b"], n)})
    follows = pd.DataFrame({"follower": [f"u{i}" for i in rng.integers(0, n, m)],
                            "followee": [f"u{i}" for i in (rng.pareto(1.2, m) * 20).astype(int) % n]})
    tag_rows = pd.DataFrame({"user": rng.integers(0, n, rows), "song": rng.integers(0, songs, rows),
                             "mood": rng.integers(0, 12, rows)}).drop_duplicates()
    return users, follows, tag_rows


def test_graph_rejects_unknown_users_and_drops_self_and_duplicate_follows():
    users = pd.DataFrame({"user_id": ["a", "b", "c"]})
    follows = pd.DataFrame({"follower": ["a", "a", "a", "b", "zz", "c"], "followee": ["b", "b", "a", "c", "a", "yy"]})
    built = build_graph(users, follows)
    assert built.counts == {"users": 3, "follows_in": 6, "follows_kept": 2, "follows_rejected": 2,
                            "self_follows_dropped": 1, "duplicate_follows_dropped": 1}
    assert sorted(built.rejects["reason"]) == ["unknown followee", "unknown follower"]
    assert set(built.rejects["follower"]) == {"zz", "c"}


def test_multi_source_bfs_matches_networkx():
    users, follows, _ = _random_social()
    built = build_graph(users, follows)
    graph = nx.DiGraph()
    graph.add_nodes_from(range(len(users)))
    graph.add_edges_from(zip(built.graph.adjacency.tocoo().row, built.graph.adjacency.tocoo().col, strict=True))
    targets = np.array([0, 5, 17, 299])
    distances = hop_distances(built.graph, targets, max_depth=3).toarray()
    for row, target in enumerate(targets):
        expected = nx.single_source_shortest_path_length(graph, int(target), cutoff=3)
        expected.pop(int(target))
        assert {int(v): int(d) for v, d in enumerate(distances[row]) if d} == expected


def test_weights_by_distance():
    assert hop_weights("inverse", 3).tolist() == [1.0, 0.5, pytest.approx(1 / 3)]
    assert hop_weights("exponential", 3, base=2.0).tolist() == [1.0, 0.5, 0.25]
    assert hop_weights("table", 2, table=[1.0, 0.1]).tolist() == [1.0, 0.1]
    with pytest.raises(ValueError, match="one per depth"):
        LabelSettings(weighting="table", weight_table=[1.0], max_depth=3)


def test_personal_truth_equals_the_naive_reference():
    users, follows, rows = _random_social()
    built = build_graph(users, follows)
    tags = tag_matrix_from_rows(rows.user.to_numpy(), rows.song.to_numpy(), rows.mood.to_numpy(), len(users),
                                np.arange(40))
    settings = LabelSettings(prior_weight=0.0, target_batch=3)  # batches must not change the result
    targets = ["u0", "u3", "u8", "u42", "u100"]
    vote = personal_truths(built.graph, tags, targets, settings)
    graph = nx.DiGraph()
    graph.add_nodes_from(range(len(users)))
    graph.add_edges_from(zip(*built.graph.adjacency.nonzero(), strict=True))
    for row, target in enumerate(targets):
        naive = naive_personal_truth(graph, rows, int(target[1:]), 3, hop_weights("inverse", 3))
        ours = {(int(s), m): float(sc[m]) for r, s, sc in zip(vote.row, vote.song, vote.scores, strict=True)
                if r == row for m in range(12) if sc[m] > 0}
        assert set(ours) == set(naive.index)
        assert max(abs(ours[k] - naive[k]) for k in ours) < 1e-6


def test_own_tags_count_only_when_asked():
    users = pd.DataFrame({"user_id": ["a", "b"]})
    built = build_graph(users, pd.DataFrame({"follower": ["a"], "followee": ["b"]}))
    # a tagged song 0 as joy, b tagged it as sadness
    tags = tag_matrix_from_rows(np.array([0, 1]), np.array([0, 0]), np.array([MOODS.index("joy"), MOODS.index("sadness")]),
                                2, np.array(["s0"]))
    without = personal_truths(built.graph, tags, ["a"], LabelSettings())
    assert without.scores[0, MOODS.index("joy")] == 0 and without.scores[0, MOODS.index("sadness")] == 1
    with_self = personal_truths(built.graph, tags, ["a"], LabelSettings(include_self=True, self_weight=1.0))
    assert with_self.scores[0, MOODS.index("joy")] == 0.5


def test_truths_labels_fallbacks_and_rules():
    users = pd.DataFrame({"user_id": ["a", "b", "c", "loner"], "culture": ["x", "x", "y", "y"]})
    follows = pd.DataFrame({"follower": ["a", "b"], "followee": ["b", "c"]})
    built = build_graph(users, follows)
    joy, calm = MOODS.index("joy"), MOODS.index("quiet")
    tags = tag_matrix_from_rows(np.array([1, 2, 2]), np.array([0, 0, 1]), np.array([joy, calm, joy]), 4,
                                np.array(["s0", "s1"]))
    settings = LabelSettings(group_by=["culture"], personal="all", prior_weight=0.0, top_k=1)
    table, counts = build_truths(built.graph, tags, users, settings)
    by = {(r.scope, r.track_id): r for r in table.itertuples()}
    assert by[("global", "s0")].labels in (["joy"], ["quiet"]) and by[("global", "s1")].labels == ["joy"]
    assert by[("group:culture=y", "s0")].labels == ["quiet"]
    assert by[("user:a", "s0")].labels == ["joy"]  # b (1 hop) outweighs c (2 hops)
    # "loner" and "c" follow nobody: group truth of their culture, recorded
    assert by[("user:loner", "s0")].fallback == "group:culture=y"
    assert counts["fallbacks"] == {"group": 2, "global": 0}
    threshold = LabelSettings(group_by=["culture"], personal="none", label_rule="threshold", threshold=0.5)
    table, _ = build_truths(built.graph, tags, users, threshold)
    assert sorted(table.set_index(["scope", "track_id"]).loc[("global", "s0"), "labels"]) == ["joy", "quiet"]


def test_target_selection_bounds_the_output():
    users = pd.DataFrame({"user_id": [f"u{i}" for i in range(10)], "culture": ["a"] * 4 + ["b"] * 6})
    assert select_targets(users, LabelSettings(personal="none")) == []
    assert select_targets(users, LabelSettings(personal="users", personal_users=["u1"])) == ["u1"]
    assert len(select_targets(users, LabelSettings(personal="sample", personal_sample=3))) == 3
    assert select_targets(users, LabelSettings(personal="group", personal_group="culture=a")) == ["u0", "u1", "u2", "u3"]
    assert len(select_targets(users, LabelSettings(personal="all"))) == 10
    from chorus.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown users"):
        select_targets(users, LabelSettings(personal="users", personal_users=["nobody"]))


def test_social_rejects_keep_what_is_wrong_with_a_reason():
    from chorus.social.rejects import social_rejects

    tables = {
        "users": pd.DataFrame({"user_id": ["a", "b"]}),
        "follows": pd.DataFrame({"follower": ["a"], "followee": ["b"]}),
        "playlists": pd.DataFrame({"playlist_id": ["p1", "p2", "p3"], "owner": ["a", "ghost", "b"],
                                   "tags": [["joy"], ["calm"], []]}),
        "playlist_tracks": pd.DataFrame({"playlist_id": ["p1", "p1", "p2", "p9"], "track_id": ["t1", "tX", "t1", "t1"]}),
    }
    kept, rejects = social_rejects(tables, {"t1"})
    assert list(kept["playlists"].playlist_id) == ["p1", "p3"]  # the empty playlist is fine
    assert list(kept["playlist_tracks"].itertuples(index=False, name=None)) == [("p1", "t1")]
    reasons = {(r.table, r.key): r.reason for r in rejects.itertuples()}
    assert reasons == {("playlists", "p2"): "unknown owner", ("playlist_tracks", "p1/tX"): "unknown track",
                       ("playlist_tracks", "p2/t1"): "unknown or rejected playlist",
                       ("playlist_tracks", "p9/t1"): "unknown or rejected playlist"}


def _protocol_on_demo_crowd(uniform: bool) -> dict:
    from chorus.datasets.demo import simulate_crowd
    from chorus.ingest import _as_tag_list
    from chorus.social.protocol import evaluate_protocol
    from chorus.social.tags import TagMapper
    from chorus.social.voting import tag_matrix, user_song_votes

    tracks = pd.DataFrame({"track_id": [f"{i:016x}" for i in range(180)], "mood": [MOODS[i % 12] for i in range(180)]})
    crowd = simulate_crowd(tracks, DemoSettings(uniform_perception=uniform))
    crowd["playlists"]["tags"] = crowd["playlists"]["tags"].map(_as_tag_list)
    built = build_graph(crowd["users"], crowd["follows"])
    tags = tag_matrix(user_song_votes(crowd["playlists"], crowd["playlist_tracks"], TagMapper.load()), built.graph)
    return evaluate_protocol(built.graph, tags, crowd["users"], LabelSettings())


def test_protocol_personal_beats_global_when_communities_differ():
    result = _protocol_on_demo_crowd(uniform=False)
    assert result["users"] >= 100
    margin = result["margin_personal_minus_global"]["f1"]
    assert margin["ci"][0] > 0, margin
    schemes = result["schemes"]
    for scheme in ("personal", "global"):
        assert schemes[scheme]["f1"]["mean"] > schemes["random"]["f1"]["ci"][1]
        assert schemes[scheme]["f1"]["mean"] > schemes["most_popular"]["f1"]["ci"][1]


def test_protocol_margin_vanishes_on_the_negative_control():
    """Communities that perceive moods alike: personal truth gains nothing over global. Not only
    an interval straddling zero (a tiny sample always does): the mean margin is within 0.02 and
    the interval, over enough users, is narrower than that bound either side."""
    result = _protocol_on_demo_crowd(uniform=True)
    margin = result["margin_personal_minus_global"]["f1"]
    assert result["users"] >= 100
    assert margin["ci"][0] <= 0 <= margin["ci"][1], margin
    assert abs(margin["mean"]) <= 0.02 and margin["ci"][1] - margin["ci"][0] <= 0.04, margin


def test_personal_batches_on_dask_give_the_same_truths():
    from distributed import Client, LocalCluster

    from chorus.compute import dask_batch_runner

    users, follows, rows = _random_social()
    built = build_graph(users, follows)
    tags = tag_matrix_from_rows(rows.user.to_numpy(), rows.song.to_numpy(), rows.mood.to_numpy(), len(users),
                                np.arange(40))
    settings = LabelSettings(personal="all", target_batch=64, group_by=["culture"])
    local, _ = build_truths(built.graph, tags, users, settings)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None, host="127.0.0.1") as cluster, \
            Client(cluster) as client:
        spread, _ = build_truths(built.graph, tags, users, settings, runner=dask_batch_runner(client))
    pd.testing.assert_frame_equal(local, spread)
