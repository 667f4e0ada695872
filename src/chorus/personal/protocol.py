"""The crowd's data for the personalised model, and the article's protocol for judging it on
audio it never saw.

Training pairs are (listener, training song) with the listener's personal truth: the weighted
votes of the people near them (never their own), shrunk towards global truth as the labels stage
does. Judging holds out songs whose audio is in the test split: for each sampled listener with
enough tags on them, the model predicts the listener's top-k moods from the audio alone and is
compared with what the listener tagged (precision, recall, F1, Jaccard @ k per listener, means
with 95% bootstrap intervals over listeners), beside its own group and global levels, the most
popular moods and random; and, as the upper reference, personal and global *truth* of the same
songs (which need other people's tags of them; the model does not)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from chorus import MOODS
from chorus.config import LabelSettings
from chorus.social.graph import SocialGraph
from chorus.social.protocol import METRICS, Holdout, bootstrap_mean, set_scores, song_predictions, vote_sums
from chorus.social.voting import N_MOODS, TagMatrix, settings_weights, top_k_labels, weighted_vote, with_prior


@dataclass
class TrainingPairs:
    listener: np.ndarray  # (pairs,) index into the listener list
    song: np.ndarray  # (pairs,) index into TagMatrix.track_ids
    scores: np.ndarray  # (pairs, 12) personal truth


def listener_groups(users: pd.DataFrame, graph: SocialGraph, positions: np.ndarray, attribute: str | None) -> list[str]:
    """Each listener's group, "attribute=value" (the first group column), or "all"."""
    if attribute is None or attribute not in users.columns:
        return ["all"] * len(positions)
    by_id = users.set_index(users["user_id"].astype(str))[attribute].astype(str)
    ids = np.asarray(graph.user_ids)[positions]
    return [f"{attribute}={by_id.get(str(u), 'unknown')}" for u in ids]


def training_pairs(graph: SocialGraph, tags: TagMatrix, positions: np.ndarray, train_songs: np.ndarray,
                   settings: LabelSettings, batch: int = 2048) -> TrainingPairs:
    """Personal truth of every listener at ``positions`` for the songs where ``train_songs``
    (bool, (songs,)) is set and someone in reach voted; batches of ``batch`` listeners."""
    everyone = weighted_vote(np.ones((1, graph.n_users), np.float32), tags)
    parts = []
    for first in range(0, len(positions), batch):
        vote = weighted_vote(settings_weights(graph, positions[first:first + batch], settings, include_self=False), tags)
        vote = with_prior(vote, everyone, tags, settings.prior_weight)
        keep = train_songs[vote.song]
        parts.append(TrainingPairs(vote.row[keep] + first, vote.song[keep], vote.scores[keep]))
    if not parts:
        return TrainingPairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, N_MOODS), np.float32))
    return TrainingPairs(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("listener", "song", "scores")))


def held_out(tags: TagMatrix, songs: np.ndarray, min_songs: int, users: int, rng: np.random.Generator) -> Holdout:
    """Listeners with at least ``min_songs`` tagged songs among ``songs`` (bool, (songs,)); up to
    ``users`` of them, each with those songs."""
    presence = tags.presence.tocsr()
    chosen, held = [], []
    for user in range(presence.shape[0]):
        own = presence.indices[presence.indptr[user]:presence.indptr[user + 1]]
        own = own[songs[own]]
        if len(own) >= min_songs:
            chosen.append(user)
            held.append(np.sort(own))
    if len(chosen) > users:
        pick = np.sort(rng.choice(len(chosen), users, replace=False))
        chosen, held = [chosen[i] for i in pick], [held[i] for i in pick]
    return Holdout(np.asarray(chosen, np.int64), held)


Predictor = Callable[[int, np.ndarray], np.ndarray]  # (listener position, song indices) -> (songs, 12) scores


def judge(graph: SocialGraph, tags: TagMatrix, users: pd.DataFrame, settings: LabelSettings, holdout: Holdout,
          predictors: dict[str, Predictor], k: int, rounds: int, seed: int) -> dict[str, Any]:
    """Each predictor's and the references' precision/recall/F1/Jaccard @ k on the held-out
    (listener, song) pairs, against the listener's own tags; margins with intervals."""
    rng = np.random.default_rng(seed)
    if len(holdout.users) == 0:
        return {"listeners": 0}
    sums = vote_sums(graph, tags, users, settings, holdout)
    schemes = [*predictors, "personal truth", "global truth", "most popular", "random"]
    per_user = {s: np.zeros((len(holdout.users), len(METRICS))) for s in schemes}
    fallbacks = {"personal_to_group": 0, "personal_to_global": 0, "personal_song_to_global": 0, "group_to_global": 0}
    pairs = 0
    for i, (user, songs) in enumerate(zip(holdout.users, holdout.songs, strict=True)):
        own_moods = tags.moods[user].toarray().ravel()
        popular = sums.mood_counts - own_moods.reshape(-1, N_MOODS).sum(axis=0)
        predicted = {name: predict(int(user), songs) for name, predict in predictors.items()}
        totals = {s: np.zeros(len(METRICS)) for s in schemes}
        for j, song in enumerate(songs):
            pairs += 1
            own = own_moods[song * N_MOODS:(song + 1) * N_MOODS]
            actual = {MOODS[m] for m in np.flatnonzero(own)}
            truth = song_predictions(sums, i, int(user), int(song), own, settings.prior_weight, fallbacks)
            scores = {**{name: p[j] for name, p in predicted.items()}, "personal truth": truth["personal"],
                      "global truth": truth["global"], "most popular": popular, "random": rng.random(N_MOODS)}
            for scheme in schemes:
                totals[scheme] += set_scores(set(top_k_labels(scores[scheme][None, :], k)[0]), actual, k)
        for scheme in schemes:
            per_user[scheme][i] = totals[scheme] / len(songs)
    table = {s: {m: bootstrap_mean(per_user[s][:, j], rounds, rng) for j, m in enumerate(METRICS)} for s in schemes}
    f1 = METRICS.index("f1")

    def margin(a: str, b: str) -> dict[str, Any]:
        value = bootstrap_mean(per_user[a][:, f1] - per_user[b][:, f1], rounds, rng)
        value["excludes_zero"] = bool(value["ci"][0] > 0 or value["ci"][1] < 0)
        return value

    first = next(iter(predictors))
    margins = {"personal truth - global truth": margin("personal truth", "global truth")}
    if "global head" in predictors:
        margins[f"{first} - global head"] = margin(first, "global head")
    if "global mood model" in predictors:
        margins[f"{first} - global mood model"] = margin(first, "global mood model")
    truth_gain = margins["personal truth - global truth"]["mean"]
    model_gain = margins.get(f"{first} - global head", {}).get("mean", float("nan"))
    return {"listeners": int(len(holdout.users)), "held_out_pairs": pairs, "k": k, "schemes": table,
            "margins_f1": margins, "share_of_truth_margin": float(model_gain / truth_gain) if truth_gain > 0 else None,
            "per_listener_f1": {s: per_user[s][:, f1].round(4).tolist() for s in (first, "global head") if s in per_user}}
