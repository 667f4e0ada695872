"""The article's protocol for judging voted truth: predict a user's own held-out tags.

For a sample of users with enough tagged songs, part of each user's songs is held out; for those
songs we predict the user's tags from personal truth (others' votes weighted by hop distance),
group truth and global truth, all built without that user, and compare with what the user
actually tagged: precision@k, recall@k, F1 and Jaccard per scheme, averaged per user, with 95%
bootstrap intervals over users, beside a random guess and the most popular moods. The margin
personal - global is bootstrapped per user as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from chorus import MOODS
from chorus.config import LabelSettings
from chorus.social.graph import SocialGraph
from chorus.social.voting import (
    N_MOODS,
    SCORE_COLUMNS,
    TagMatrix,
    membership,
    settings_weights,
    top_k_labels,
)

METRICS = ("precision", "recall", "f1", "jaccard")


def set_scores(predicted: set[str], actual: set[str], k: int) -> tuple[float, float, float, float]:
    hit = len(predicted & actual)
    precision = hit / k
    recall = hit / len(actual) if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if hit else 0.0
    union = len(predicted | actual)
    return precision, recall, f1, (hit / union if union else 0.0)


def bootstrap_mean(values: np.ndarray, rounds: int, rng: np.random.Generator) -> dict[str, Any]:
    """Mean and 95% percentile interval of the mean, resampling users."""
    values = np.asarray(values, np.float64)
    if len(values) == 0:
        return {"mean": float("nan"), "ci": [float("nan"), float("nan")]}
    picks = rng.integers(0, len(values), size=(rounds, len(values)))
    means = values[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(values.mean()), "ci": [float(low), float(high)]}


@dataclass(frozen=True)
class Holdout:
    users: np.ndarray  # graph positions of the sampled users
    songs: list[np.ndarray]  # held-out song indices per user


def sample_holdout(tags: TagMatrix, settings: LabelSettings, rng: np.random.Generator) -> Holdout:
    counts = np.diff(tags.presence.indptr)
    candidates = np.flatnonzero(counts >= settings.protocol_min_songs)
    chosen = np.sort(rng.choice(candidates, size=min(settings.protocol_users, len(candidates)), replace=False))
    songs = []
    for user in chosen:
        own = tags.presence.indices[tags.presence.indptr[user] : tags.presence.indptr[user + 1]]
        size = max(1, int(round(len(own) * settings.protocol_holdout)))
        songs.append(np.sort(rng.choice(own, size=size, replace=False)))
    return Holdout(chosen, songs)


def _vectors(matrix: sp.csr_matrix, row: int, song: int) -> np.ndarray:
    return matrix[row, song * N_MOODS : (song + 1) * N_MOODS].toarray().ravel()


@dataclass
class VoteSums:
    """The vote sums the protocol predicts from: personal (every other user within reach of each
    sampled user, weighted by hop distance), per group of each attribute, and global."""

    personal_num: sp.csr_matrix
    personal_den: sp.csr_matrix
    reach: np.ndarray  # users within max_depth of each sampled user
    global_num: np.ndarray
    global_den: np.ndarray
    groups: dict[str, tuple[np.ndarray, sp.csr_matrix, np.ndarray]]  # attribute -> (codes, num, den)
    mood_counts: np.ndarray


def vote_sums(graph: SocialGraph, tags: TagMatrix, users: pd.DataFrame, settings: LabelSettings,
              holdout: Holdout) -> VoteSums:
    # personal: every other user within reach, weighted by hop distance (never the user)
    weights = settings_weights(graph, holdout.users, settings, include_self=False)
    # global and group sums over everyone; each user's own vectors are subtracted per prediction
    global_num = np.asarray(tags.moods.sum(axis=0)).ravel()
    groups: dict[str, tuple[np.ndarray, sp.csr_matrix, np.ndarray]] = {}
    for attribute in [a for a in settings.group_by if a in users.columns]:
        _, member = membership(users, graph, [attribute])
        codes = member.tocsc().indices  # every user is in exactly one group of an attribute
        groups[attribute] = (codes, (member @ tags.moods).tocsr(), np.asarray((member @ tags.presence).todense()))
    return VoteSums((weights @ tags.moods).tocsr(), (weights @ tags.presence).tocsr(), np.diff(weights.indptr),
                    global_num, np.asarray(tags.presence.sum(axis=0)).ravel(), groups,
                    global_num.reshape(-1, N_MOODS).sum(axis=0))


def _personal_prediction(sums: VoteSums, i: int, song: int, g_scores: np.ndarray, first_group: np.ndarray | None,
                         prior: float, fallbacks: dict[str, int]) -> np.ndarray:
    """The personal truth's scores of one held-out song, with the fallbacks of the labels stage."""
    p_den = sums.personal_den[i, song]
    if p_den > 0:
        return (_vectors(sums.personal_num, i, song) + prior * g_scores) / (p_den + prior)
    if sums.reach[i] > 0:  # people in reach, none voted on this song: the prior (global truth) stands
        fallbacks["personal_song_to_global"] += 1
        return g_scores
    if first_group is not None:  # nobody in reach: the user's group, then global
        fallbacks["personal_to_group"] += 1
        return first_group
    fallbacks["personal_to_global"] += 1
    return g_scores


def song_predictions(sums: VoteSums, i: int, user: int, song: int, own: np.ndarray, prior: float,
                     fallbacks: dict[str, int]) -> dict[str, np.ndarray]:
    """Each scheme's mood scores (N_MOODS,) for one held-out (user, song), the user's own votes
    ``own`` left out of every sum."""
    g_den = sums.global_den[song] - 1
    g_scores = (sums.global_num[song * N_MOODS : (song + 1) * N_MOODS] - own) / max(g_den, 1)
    predictions: dict[str, np.ndarray] = {"global": g_scores}
    first_group = None
    for attribute, (codes, num, den) in sums.groups.items():
        code = codes[user]
        n = den[code, song] - 1
        if n > 0:
            scores = (_vectors(num, code, song) - own) / n
        else:
            scores = g_scores
            fallbacks["group_to_global"] += 1
        predictions[f"group:{attribute}"] = scores
        if first_group is None:
            first_group = scores if n > 0 else None
    predictions["personal"] = _personal_prediction(sums, i, song, g_scores, first_group, prior, fallbacks)
    return predictions


def evaluate_protocol(graph: SocialGraph, tags: TagMatrix, users: pd.DataFrame, settings: LabelSettings) -> dict[str, Any]:
    rng = np.random.default_rng(settings.seed)
    holdout = sample_holdout(tags, settings, rng)
    k = settings.top_k
    if len(holdout.users) == 0:
        return {"users": 0, "note": f"no user has {settings.protocol_min_songs}+ tagged songs"}
    sums = vote_sums(graph, tags, users, settings, holdout)
    schemes = ["personal", *[f"group:{a}" for a in sums.groups], "global", "most_popular", "random"]
    per_user = {s: np.zeros((len(holdout.users), len(METRICS))) for s in schemes}
    fallbacks = {"personal_to_group": 0, "personal_to_global": 0, "personal_song_to_global": 0, "group_to_global": 0}
    pairs = 0
    for i, (user, songs) in enumerate(zip(holdout.users, holdout.songs, strict=True)):
        own_moods = tags.moods[user].toarray().ravel()
        totals = {s: np.zeros(len(METRICS)) for s in schemes}
        popular = sums.mood_counts - own_moods.reshape(-1, N_MOODS).sum(axis=0)
        for song in songs:
            pairs += 1
            own = own_moods[song * N_MOODS : (song + 1) * N_MOODS]
            actual = {MOODS[j] for j in np.flatnonzero(own)}
            predictions = song_predictions(sums, i, user, song, own, settings.prior_weight, fallbacks)
            predictions["most_popular"] = popular
            predictions["random"] = rng.random(N_MOODS)
            for scheme in schemes:
                totals[scheme] += set_scores(set(top_k_labels(predictions[scheme][None, :], k)[0]), actual, k)
        for scheme in schemes:
            per_user[scheme][i] = totals[scheme] / len(songs)
    return {"users": int(len(holdout.users)), "held_out_pairs": pairs, "k": k,
            **_protocol_tables(per_user, schemes, settings, rng), "fallbacks": fallbacks,
            "settings": {"max_depth": settings.max_depth, "weighting": settings.weighting, "base": settings.base,
                         "prior_weight": settings.prior_weight, "holdout": settings.protocol_holdout,
                         "min_songs": settings.protocol_min_songs, "bootstrap": settings.bootstrap, "seed": settings.seed}}


def _protocol_tables(per_user: dict[str, np.ndarray], schemes: list[str], settings: LabelSettings,
                     rng: np.random.Generator) -> dict[str, Any]:
    """Each scheme's mean metrics and the personal-minus-global margin, with bootstrap intervals."""
    table = {s: {m: bootstrap_mean(per_user[s][:, j], settings.bootstrap, rng) for j, m in enumerate(METRICS)}
             for s in schemes}
    margin = {m: bootstrap_mean(per_user["personal"][:, j] - per_user["global"][:, j], settings.bootstrap, rng)
              for j, m in enumerate(METRICS)}
    for value in margin.values():
        value["excludes_zero"] = bool(value["ci"][0] > 0 or value["ci"][1] < 0)
    return {"schemes": table, "margin_personal_minus_global": margin}


def mood_rank(scores: np.ndarray, mood: np.ndarray) -> np.ndarray:
    """Each row's rank of ``mood`` among its scores, 0 for the highest; ties go by vocabulary order
    (as in ``top_k_labels``).

    Args:
        scores: (rows, 12) truth scores.
        mood: (rows,) a mood index per row.
    Returns:
        (rows,) int ranks in 0..11."""
    own = scores[np.arange(len(scores)), mood][:, None]
    earlier = np.arange(scores.shape[1])[None, :] < mood[:, None]
    return ((scores > own) | ((scores == own) & earlier)).sum(axis=1)


def label_quality(truth: pd.DataFrame, planted: pd.Series, top_k: int) -> dict[str, Any]:
    """How well global and group truth recover each track's planted mood (the demo's only true
    mood): top-1 accuracy and top-k hit rate per scope kind, beside chance (1/12, k/12).

    Track ids are matched once per distinct id (factorized), not once per row: a catalogue's
    truth table has hundreds of thousands of rows."""
    out: dict[str, Any] = {"chance_top1": 1 / N_MOODS, "chance_top_k": top_k / N_MOODS, "k": top_k}
    track, track_ids = pd.factorize(truth["track_id"])
    mood_of_id = planted.reindex(np.asarray(track_ids, dtype=object)).map({m: i for i, m in enumerate(MOODS)})
    mood = mood_of_id.fillna(-1).to_numpy(np.int64)[track]
    scope = truth["scope"]
    for kind, in_kind in (("global", scope == "global"), ("group", scope.str.startswith("group:"))):
        rows = in_kind.to_numpy(bool) & (mood >= 0)
        if not rows.any():
            continue
        rank = mood_rank(truth.loc[rows, SCORE_COLUMNS].to_numpy(), mood[rows])
        out[kind] = {"tracks": len(np.unique(track[rows])), "rows": int(rows.sum()),
                     "top1_accuracy": float((rank == 0).mean()),
                     "top_k_hit_rate": float((rank < top_k).mean())}
    return out
