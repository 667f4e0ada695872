"""A personalised mood model: a frozen audio encoder's embedding, whitened by PCA, under linear
heads at three levels: one global head, one per group of listeners (the users table's group
columns), and one per listener, each shrunk towards the level above it.

Fitting is ridge regression in closed form. The global head regresses the 12 mood scores of the
training songs' global truth on the embedding. A group head minimises its members' squared
error on their personal truth of training songs plus ``group_shrinkage`` times its squared
distance to the global head; a listener's head the same on their own pairs, towards their
group's head: W = (X'X + lambda I)^-1 (X'Y + lambda W_parent). Listeners are solved in batches of
``batch`` (memory bounded by a batch, not the crowd). A listener with fewer than ``min_songs``
training pairs keeps no head of their own: they fall back to their group, then to global, and a
prediction says which level answered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

Level = Literal["listener", "group", "global"]
PAIR_CHUNK = 1_000_000  # training pairs summed at a time for the group heads


@dataclass(frozen=True)
class PersonalFit:
    """``dims``: PCA dimensions kept; shrinkages towards the parent level; ``min_songs``: a
    listener's own head needs this many training pairs; ``batch``: listeners solved at once."""

    dims: int = 24
    global_ridge: float = 1.0
    group_shrinkage: float = 20.0
    listener_shrinkage: float = 10.0
    min_songs: int = 5
    batch: int = 4096


@dataclass
class PersonalMoodModel:
    """The encoder's whitening (``mean`` (d,), ``projection`` (d, r)), the heads ((r + 1, 12)
    each: weights and bias), and the listener table (one row per listener: ``listener`` a keyed
    digest of the user id, ``group``, ``songs`` trained on, ``weights`` the flattened head, empty
    for a listener with too few songs)."""

    mean: np.ndarray
    projection: np.ndarray
    global_head: np.ndarray
    group_heads: dict[str, np.ndarray]
    listeners: pd.DataFrame  # every listener seen in training; ``weights`` empty: no head of their own

    def design(self, embeddings: np.ndarray) -> np.ndarray:
        """[whitened PCA coordinates, 1] of ``embeddings`` (n, d): shape (n, r + 1)."""
        z = (np.asarray(embeddings, np.float64) - self.mean) @ self.projection
        return np.hstack([z, np.ones((len(z), 1))])

    def head(self, listener: str | None = None, group: str | None = None) -> tuple[np.ndarray, Level]:
        """The head that answers for ``listener`` (a digest) or ``group``, and its level: the
        listener's own, else their (or the given) group's, else global."""
        if listener is not None:
            rows = self.listeners.index[self.listeners["listener"] == listener]
            if len(rows):
                row = self.listeners.loc[rows[0]]
                if row["weights"] is not None and len(row["weights"]):
                    return np.asarray(row["weights"], np.float64).reshape(self.global_head.shape), "listener"
                group = group or str(row["group"])
        if group is not None and group in self.group_heads:
            return self.group_heads[group], "group"
        return self.global_head, "global"

    def predict(self, embeddings: np.ndarray, listener: str | None = None, group: str | None = None) -> tuple[np.ndarray, Level]:
        """Mood scores (n, 12) of tracks with ``embeddings`` (n, d) as ``listener`` (or ``group``)
        hears them, clipped to [0, 1], and the level that answered."""
        head, level = self.head(listener, group)
        return np.clip(self.design(embeddings) @ head, 0.0, 1.0), level


def _ridge_towards(gram: np.ndarray, cross: np.ndarray, parent: np.ndarray, strength: float) -> np.ndarray:
    """argmin_W ||XW - Y||^2 + strength ||W - parent||^2 from X'X (..., p, p) and X'Y (..., p, 12)."""
    eye = np.eye(gram.shape[-1])
    return np.linalg.solve(gram + strength * eye, cross + strength * parent)


def fit_personal_model(embeddings: np.ndarray, global_truth: np.ndarray, pair_listener: np.ndarray, pair_track: np.ndarray,
                       pair_scores: np.ndarray, listener_ids: list[str], listener_groups: list[str],
                       fit: PersonalFit = PersonalFit()) -> PersonalMoodModel:
    """Fit the three levels.

    Parameters
    ----------
    embeddings : np.ndarray, shape (tracks, d)
        The encoder's embedding of each training track.
    global_truth : np.ndarray, shape (tracks, 12)
        The global truth of each training track (NaN rows: no votes; left out).
    pair_listener, pair_track : np.ndarray, shape (pairs,)
        Each training pair's listener (index into ``listener_ids``) and track (row of ``embeddings``).
    pair_scores : np.ndarray, shape (pairs, 12)
        The listener's personal truth of the track (others' weighted votes).
    listener_ids, listener_groups : list of str, length listeners
        Each listener's keyed digest and group ("attribute=value").
    """
    from sklearn.decomposition import PCA

    dims = min(fit.dims, embeddings.shape[1], len(embeddings) - 1)
    pca = PCA(n_components=dims, whiten=True, random_state=0).fit(embeddings)
    projection = pca.components_.T / np.sqrt(pca.explained_variance_)[None, :]
    model = PersonalMoodModel(pca.mean_, projection, np.zeros((dims + 1, 12)), {}, pd.DataFrame())
    x = model.design(embeddings)
    voted = ~np.isnan(global_truth).any(axis=1)
    model.global_head = _ridge_towards(x[voted].T @ x[voted], x[voted].T @ global_truth[voted],
                                       np.zeros((dims + 1, 12)), fit.global_ridge)
    # group heads from their members' pairs, summed a chunk of pairs at a time (memory: a chunk, not the crowd)
    group_names = sorted(set(listener_groups))
    group_of_listener = np.searchsorted(group_names, np.asarray(listener_groups, dtype=object))
    gram_g = np.zeros((len(group_names), dims + 1, dims + 1))
    cross_g = np.zeros((len(group_names), dims + 1, 12))
    for first in range(0, len(pair_track), PAIR_CHUNK):
        chunk = slice(first, first + PAIR_CHUNK)
        px, py, pg = x[pair_track[chunk]], pair_scores[chunk], group_of_listener[pair_listener[chunk]]
        for g in np.unique(pg):
            rows = pg == g
            gram_g[g] += px[rows].T @ px[rows]
            cross_g[g] += px[rows].T @ py[rows]
    counts_g = np.bincount(group_of_listener[pair_listener], minlength=len(group_names))
    for g, group in enumerate(group_names):
        if counts_g[g]:
            model.group_heads[group] = _ridge_towards(gram_g[g], cross_g[g], model.global_head, fit.group_shrinkage)
    songs = np.bincount(pair_listener, minlength=len(listener_ids))
    own = np.flatnonzero(songs >= fit.min_songs)
    order = np.argsort(pair_listener, kind="stable")
    starts = np.searchsorted(pair_listener[order], np.arange(len(listener_ids) + 1))
    weights: list[np.ndarray] = [np.zeros(0, np.float32)] * len(listener_ids)
    for first in range(0, len(own), fit.batch):
        batch = own[first:first + fit.batch]
        gram = np.zeros((len(batch), dims + 1, dims + 1))
        cross = np.zeros((len(batch), dims + 1, 12))
        parents = np.stack([model.group_heads.get(listener_groups[i], model.global_head) for i in batch])
        for j, listener in enumerate(batch):
            rows = order[starts[listener]:starts[listener + 1]]
            px = x[pair_track[rows]]
            gram[j] = px.T @ px
            cross[j] = px.T @ pair_scores[rows]
        for listener, head in zip(batch, _ridge_towards(gram, cross, parents, fit.listener_shrinkage), strict=True):
            weights[listener] = head.ravel().astype(np.float32)
    model.listeners = pd.DataFrame({"listener": listener_ids, "group": listener_groups, "songs": songs.astype(np.int32),
                                    "weights": weights})
    return model
