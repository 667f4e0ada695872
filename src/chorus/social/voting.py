"""From playlist tags to mood truth.

A playlist's kept tags pass to every song in it, so each (user, song) gets a 12-dim 0/1 vector
(the union over that user's playlists holding the song). Global truth averages those vectors over
the users who have one; labels are the top k moods of a truth vector.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from chorus import MOODS
from chorus.social.tags import TagMapper

SCORE_COLUMNS = [f"score_{m}" for m in MOODS]


@dataclass(frozen=True)
class UserSongVotes:
    """(user, song) pairs with their 12-dim 0/1 vectors, and what tag mapping discarded."""

    pairs: pd.DataFrame  # user_id, track_id
    vectors: np.ndarray  # (len(pairs), 12) float32
    discarded_tags: Counter[str]
    playlists_without_mood: int


def user_song_votes(playlists: pd.DataFrame, playlist_tracks: pd.DataFrame, mapper: TagMapper) -> UserSongVotes:
    playlist_vectors = np.stack([mapper.vector(tags) for tags in playlists["tags"]]) if len(playlists) else np.zeros((0, 12), np.float32)
    without_mood = int((playlist_vectors.sum(axis=1) == 0).sum())
    index = pd.Series(np.arange(len(playlists)), index=playlists["playlist_id"].to_numpy())
    members = playlist_tracks[playlist_tracks["playlist_id"].isin(index.index)]
    rows = index.loc[members["playlist_id"].to_numpy()].to_numpy()
    owners = playlists["owner"].to_numpy()[rows]
    frame = pd.DataFrame({"user_id": owners, "track_id": members["track_id"].to_numpy()})
    vectors = playlist_vectors[rows]
    # Union over a user's playlists holding the same song.
    keys = frame.groupby(["user_id", "track_id"], sort=True).ngroup().to_numpy()
    n = int(keys.max()) + 1 if len(keys) else 0
    merged = np.zeros((n, len(MOODS)), np.float32)
    np.maximum.at(merged, keys, vectors)
    pairs = frame.assign(_k=keys).drop_duplicates("_k").sort_values("_k")[["user_id", "track_id"]].reset_index(drop=True)
    return UserSongVotes(pairs, merged, Counter(mapper.discarded), without_mood)


def top_k_labels(scores: np.ndarray, k: int) -> list[list[str]]:
    """The k highest-scoring moods of each row (ties by vocabulary order), ignoring zero scores."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[MOODS[j] for j in row if scores[i, j] > 0] for i, row in enumerate(order)]


def global_truth(votes: UserSongVotes, top_k: int) -> pd.DataFrame:
    """The labels table, scope 'global': per song, the mean vector over users who tagged it."""
    if votes.pairs.empty:
        return pd.DataFrame(columns=["scope", "track_id", *SCORE_COLUMNS, "labels", "n_users"])
    codes, tracks = pd.factorize(votes.pairs["track_id"], sort=True)
    sums = np.zeros((len(tracks), len(MOODS)), np.float64)
    np.add.at(sums, codes, votes.vectors)
    counts = np.bincount(codes, minlength=len(tracks))
    scores = (sums / counts[:, None]).astype(np.float32)
    table = pd.DataFrame(scores, columns=SCORE_COLUMNS)
    table.insert(0, "track_id", np.asarray(tracks))
    table.insert(0, "scope", "global")
    table["labels"] = top_k_labels(scores, top_k)
    table["n_users"] = counts.astype(np.int32)
    return table
