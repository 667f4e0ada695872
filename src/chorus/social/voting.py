"""From playlist tags to mood truth, by weighted voting.

A playlist's kept tags pass to every song in it, so each (user, song) gets a 12-dim 0/1 vector
(the union over that user's playlists holding the song). Every truth is one weighted vote: a
(voters x users) weight matrix W times the users' tag matrix, divided by the weight of the users
who have a vector for the song. Personal truth: W = w(hop distance) from the target. Group truth:
W = 1 for the group's members. Global truth: W = 1 for everyone. Labels are the top k moods of a
truth vector, or the moods above a threshold.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from chorus import MOODS
from chorus.errors import ConfigError
from chorus.social.graph import SocialGraph, hop_weights, reach_weights
from chorus.social.tags import TagMapper

SCORE_COLUMNS = [f"score_{m}" for m in MOODS]


@dataclass(frozen=True)
class UserSongVotes:
    """(user, song) pairs with their 12-dim 0/1 vectors, and what tag mapping discarded. A pair is
    a code into ``user_ids`` and one into ``track_ids``, both sorted, so pairs are in (user id,
    track id) order."""
    user_ids: np.ndarray  # (users,) str: the playlists' owners
    track_ids: np.ndarray  # (songs,) str
    user: np.ndarray  # (pairs,) int: index into user_ids
    song: np.ndarray  # (pairs,) int: index into track_ids
    vectors: np.ndarray  # (pairs, 12) bool
    discarded_tags: Counter[str]
    playlists_without_mood: int

    @property
    def pairs(self) -> pd.DataFrame:
        """user_id, track_id: one row per pair."""
        return pd.DataFrame({"user_id": self.user_ids[self.user], "track_id": self.track_ids[self.song]})


def user_song_votes(playlists: pd.DataFrame, playlist_tracks: pd.DataFrame, mapper: TagMapper) -> UserSongVotes:
    """Each (owner, song) pair of the playlists, with the union of the mood vectors of that owner's
    playlists holding the song. Playlist ids are unique (ingest checks it); a playlist_tracks row
    naming no playlist is skipped.

    Works on integer codes of users and songs: at a catalogue's size, string keys per membership
    row cost more memory than the votes themselves."""
    playlist_vectors = (np.stack([mapper.vector(tags) for tags in playlists["tags"]]) > 0 if len(playlists)
                        else np.zeros((0, N_MOODS), bool))
    without_mood = int((~playlist_vectors.any(axis=1)).sum())
    # factorize first, then look up only the distinct ids: Arrow-backed columns factorize
    # without making a Python string per row
    member_of, member_playlists = pd.factorize(playlist_tracks["playlist_id"])
    rows = pd.Index(playlists["playlist_id"]).get_indexer(member_playlists)[member_of]
    known = rows >= 0
    rows = rows[known]
    owner_of_playlist, users = pd.factorize(playlists["owner"], sort=True)
    song, songs = pd.factorize(playlist_tracks["track_id"][known], sort=True)
    n_songs = max(len(songs), 1)
    pair_keys, pair_of_row = np.unique(owner_of_playlist[rows].astype(np.int64) * n_songs + song, return_inverse=True)
    merged = np.zeros((len(pair_keys), N_MOODS), bool)
    np.logical_or.at(merged, pair_of_row, playlist_vectors[rows])  # union over the owner's playlists
    return UserSongVotes(np.asarray(users, dtype=object), np.asarray(songs, dtype=object), pair_keys // n_songs,
                         pair_keys % n_songs, merged, Counter(mapper.discarded), without_mood)


def top_k_labels(scores: np.ndarray, k: int) -> list[list[str]]:
    """The k highest-scoring moods of each row (ties by vocabulary order), ignoring zero scores."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[MOODS[j] for j in row if scores[i, j] > 0] for i, row in enumerate(order)]


N_MOODS = len(MOODS)


@dataclass(frozen=True)
class TagMatrix:
    """Users' (user, song) vectors as sparse matrices over the graph's user positions."""
    track_ids: np.ndarray  # song column -> track id
    presence: sp.csr_matrix  # (users, songs): 1 where the user has a non-zero vector for the song
    moods: sp.csr_matrix  # (users, songs * 12): vec(user, song)[j] at column song * 12 + j

    @property
    def n_songs(self) -> int:
        return len(self.track_ids)


def tag_matrix(votes: UserSongVotes, graph: SocialGraph) -> TagMatrix:
    """Pairs whose user is not in the graph must have been rejected before (see rejects)."""
    # a pair whose playlists kept no mood says nothing about moods: it is not a vote
    informative = votes.vectors.any(axis=1)
    rows = graph.positions(votes.user_ids)[votes.user[informative]]
    if (rows < 0).any():
        raise ValueError("tag pairs name users outside the graph; reject them first")
    songs, kept = pd.factorize(votes.song[informative], sort=True)
    pair, mood = np.nonzero(votes.vectors[informative])
    return tag_matrix_from_rows(rows[pair], songs[pair], mood, graph.n_users, votes.track_ids[kept])


def tag_matrix_from_rows(user: np.ndarray, song: np.ndarray, mood: np.ndarray, n_users: int,
                         track_ids: np.ndarray) -> TagMatrix:
    """From (user position, song index, mood index) assignment rows; duplicates count once."""
    n_songs = len(track_ids)
    moods = sp.csr_matrix((np.ones(len(user), np.float32), (user, song.astype(np.int64) * N_MOODS + mood)),
                          shape=(n_users, n_songs * N_MOODS))
    moods.sum_duplicates()
    moods.data[:] = 1.0
    presence = sp.csr_matrix((np.ones(len(user), np.float32), (user, song)), shape=(n_users, n_songs))
    presence.sum_duplicates()
    presence.data[:] = 1.0
    return TagMatrix(track_ids, presence, moods)


@dataclass(frozen=True)
class Vote:
    """Truth vectors of (voter-row, song) pairs that got any vote."""
    row: np.ndarray  # index into the weight matrix's rows
    song: np.ndarray  # index into TagMatrix.track_ids
    scores: np.ndarray  # (pairs, 12) float32 in [0, 1]
    weight: np.ndarray  # (pairs,) total weight of the users who voted


def weighted_vote(weights: sp.csr_matrix, tags: TagMatrix) -> Vote:
    """scores[r, m] = sum_v W[r, v] vec(v, m) / sum_v W[r, v] [v has a mood vector for m].

    Vectorised over the sparse products' entries: numerator entries sorted by (row, column) map
    to (row, song) pairs by their column // 12, with no per-pair Python work."""
    weights = sp.csr_matrix(weights, dtype=np.float32)
    n_songs = np.int64(tags.n_songs)
    numerator = (weights @ tags.moods).tocsr()
    numerator.sort_indices()
    num = numerator.tocoo()
    key = num.row.astype(np.int64) * n_songs + num.col // N_MOODS
    boundary = np.empty(len(key), bool)
    boundary[:1] = True
    np.not_equal(key[1:], key[:-1], out=boundary[1:])
    pair_keys = key[boundary]
    pair_index = np.cumsum(boundary) - 1
    scores = np.zeros((len(pair_keys), N_MOODS), np.float32)
    scores[pair_index, num.col % N_MOODS] = num.data
    denominator = (weights @ tags.presence).tocsr()
    denominator.sort_indices()
    den = denominator.tocoo()
    den_keys = den.row.astype(np.int64) * n_songs + den.col
    weight = den.data[np.searchsorted(den_keys, pair_keys)].astype(np.float32)
    scores /= weight[:, None]
    return Vote(pair_keys // n_songs, pair_keys % n_songs, np.clip(scores, 0.0, 1.0), weight)


def choose_labels(scores: np.ndarray, rule: str, top_k: int, threshold: float) -> list[list[str]]:
    if rule == "threshold":
        return [[MOODS[j] for j in np.flatnonzero(row >= threshold)] for row in scores]
    return top_k_labels(scores, top_k)


def membership(users: pd.DataFrame, graph: SocialGraph, attributes: list[str]) -> tuple[list[str], sp.csr_matrix]:
    """Group names ("attribute=value") and a (groups x users) 0/1 membership matrix."""
    names: list[str] = []
    rows, cols = [], []
    positions = graph.positions(users["user_id"].astype(str))
    for attribute in attributes:
        if attribute not in users.columns:
            continue
        values = users[attribute].astype(str).to_numpy()
        for value in sorted(set(values)):
            members = positions[values == value]
            rows += [len(names)] * len(members)
            cols += members.tolist()
            names.append(f"{attribute}={value}")
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(names), graph.n_users))
    return names, matrix


def personal_weights(graph: SocialGraph, targets: np.ndarray, max_depth: int, hop_weight: np.ndarray,
                     include_self: bool = False, self_weight: float = 1.0) -> sp.csr_matrix:

    weights = reach_weights(graph, targets, max_depth, hop_weight)
    if include_self and self_weight > 0:
        own = sp.csr_matrix((np.full(len(targets), self_weight, np.float32), (np.arange(len(targets)), targets)),
                            shape=weights.shape)
        weights = (weights + own).tocsr()
    return weights


def truth_table(vote: Vote, scopes: list[str], tags: TagMatrix, rule: str, top_k: int, threshold: float,
                fallback: str = "") -> pd.DataFrame:
    """The labels table (docs/pipeline.md, "The state directory") for a vote: scope, track_id, 12 scores, labels, weight."""
    table = pd.DataFrame(vote.scores, columns=SCORE_COLUMNS)
    table.insert(0, "track_id", tags.track_ids[vote.song])
    table.insert(0, "scope", np.asarray(scopes, dtype=object)[vote.row])
    table["labels"] = choose_labels(vote.scores, rule, top_k, threshold)
    table["weight"] = vote.weight
    table["fallback"] = fallback
    return table


def select_targets(users: pd.DataFrame, settings: Any) -> list[str]:
    """Whose personal truths are written (bounded output): a list, a sample, a group, all, none."""
    ids = users["user_id"].astype(str)
    if settings.personal == "none":
        return []
    if settings.personal == "users":
        unknown = sorted(set(settings.personal_users) - set(ids))
        if unknown:
            raise ConfigError(f"labels.personal_users names unknown users: {unknown[:5]}")
        return list(settings.personal_users)
    if settings.personal == "group":
        if not settings.personal_group or "=" not in settings.personal_group:
            raise ConfigError("labels.personal=group needs labels.personal_group as attribute=value")
        attribute, value = settings.personal_group.split("=", 1)
        return ids[users[attribute].astype(str) == value].tolist()
    if settings.personal == "sample":
        rng = np.random.default_rng(settings.seed)
        return sorted(rng.choice(ids.to_numpy(), size=min(settings.personal_sample, len(ids)), replace=False).tolist())
    return ids.tolist()


def settings_weights(graph: SocialGraph, targets: np.ndarray, settings: Any, include_self: bool) -> sp.csr_matrix:
    """personal_weights with w(d) and the depth from the labels settings."""
    hop_weight = hop_weights(settings.weighting, settings.max_depth, settings.base, settings.weight_table)
    return personal_weights(graph, targets, settings.max_depth, hop_weight, include_self, settings.self_weight)


def personal_batch(graph: SocialGraph, tags: TagMatrix, positions: np.ndarray, settings: Any) -> Vote:
    """Personal votes of one batch of target positions (rows 0..len-1)."""
    return weighted_vote(settings_weights(graph, positions, settings, settings.include_self), tags)


# (function, graph, tags, batches, settings) -> votes in batch order: how batches fan out
BatchRunner = Callable[[Callable[..., Vote], SocialGraph, TagMatrix, list[np.ndarray], Any], list[Vote]]


def personal_truths(graph: SocialGraph, tags: TagMatrix, targets: list[str], settings: Any,
                    runner: BatchRunner | None = None) -> Vote:
    """Personal votes of ``targets`` (rows in that order), in batches of ``target_batch``; a
    ``runner`` (e.g. Dask's) spreads the batches over workers."""
    positions = graph.positions(targets)
    batches = [positions[start : start + settings.target_batch] for start in range(0, len(positions), settings.target_batch)]
    if runner is None:
        votes = [personal_batch(graph, tags, batch, settings) for batch in batches]
    else:
        votes = runner(personal_batch, graph, tags, batches, settings)
    parts = []
    offset = 0
    for batch, vote in zip(batches, votes, strict=True):
        parts.append(Vote(vote.row + offset, vote.song, vote.scores, vote.weight))
        offset += len(batch)
    if not parts:
        return Vote(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, N_MOODS), np.float32), np.zeros(0, np.float32))
    return Vote(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("row", "song", "scores", "weight")))


def with_prior(vote: Vote, prior: Vote, tags: TagMatrix, prior_weight: float) -> Vote:
    """Shrink votes toward the prior's truth: (sum w v + a p) / (sum w + a). Personal votes of a
    few distant voters are noisy; without the prior, personal truth loses to global truth when
    every community perceives alike (the negative control)."""
    if prior_weight <= 0 or len(vote.row) == 0:
        return vote
    per_song = np.zeros((tags.n_songs, N_MOODS), np.float32)
    per_song[prior.song] = prior.scores
    scores = (vote.scores * vote.weight[:, None] + prior_weight * per_song[vote.song]) / (vote.weight + prior_weight)[:, None]
    return Vote(vote.row, vote.song, scores.astype(np.float32), vote.weight)


def build_truths(graph: SocialGraph, tags: TagMatrix, users: pd.DataFrame, settings: Any,
                 runner: BatchRunner | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Global, group and personal truth as one labels table. A target nobody in reach voted for
    falls back to their group's truth (first attribute of group_by that has one), then global;
    the ``fallback`` column records which."""
    rule = (settings.label_rule, settings.top_k, settings.threshold)
    everyone = sp.csr_matrix(np.ones((1, graph.n_users), np.float32))
    global_vote = weighted_vote(everyone, tags)
    global_table = truth_table(global_vote, ["global"], tags, *rule)
    names, member = membership(users, graph, settings.group_by)
    group_table = truth_table(weighted_vote(member, tags), [f"group:{n}" for n in names], tags, *rule)
    targets = select_targets(users, settings)
    personal = with_prior(personal_truths(graph, tags, targets, settings, runner), global_vote, tags, settings.prior_weight)
    personal_table = truth_table(personal, [f"user:{t}" for t in targets], tags, *rule)
    voted = set(personal.row.tolist())
    lonely = [t for i, t in enumerate(targets) if i not in voted]
    fallback_rows = []
    by_user = users.set_index(users["user_id"].astype(str))
    groups_with_truth = set(group_table["scope"])
    fallbacks = {"group": 0, "global": 0}
    for target in lonely:
        source = next((f"group:{a}={by_user.at[target, a]}" for a in settings.group_by
                       if a in by_user.columns and f"group:{a}={by_user.at[target, a]}" in groups_with_truth), None)
        rows = (group_table[group_table["scope"] == source] if source else global_table).copy()
        rows["scope"], rows["fallback"] = f"user:{target}", source or "global"
        fallbacks["group" if source else "global"] += 1
        fallback_rows.append(rows)
    table = pd.concat([global_table, group_table, personal_table, *fallback_rows], ignore_index=True)
    counts = {"global_rows": len(global_table), "groups": len(names), "group_rows": len(group_table),
              "prior_weight": settings.prior_weight,
              "personal_targets": len(targets), "personal_rows": int(len(personal_table) + sum(map(len, fallback_rows))),
              "fallbacks": fallbacks}
    return table, counts
