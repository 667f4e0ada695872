"""Retrieval and compression metrics (docs/method.md, "Evaluation and promotion"): rankings by cosine similarity of
semantic vectors or Hamming distance of binary codes, judged by shared style labels and by
whether another excerpt of the query's own track comes back; hash baselines at the same bit
budget (LSH random projections, PCA + random rotation); accuracy and distortion after PCA."""

from __future__ import annotations

from typing import Any

import numpy as np


def cosine_distance(vectors: np.ndarray) -> np.ndarray:
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return 1.0 - unit @ unit.T


def hamming_distance(codes: np.ndarray) -> np.ndarray:
    signs = np.where(codes >= 0, 1, -1).astype(np.int32)
    return ((signs.shape[1] - signs @ signs.T) // 2).astype(np.float64)


def top_k(distance: np.ndarray, k: int) -> np.ndarray:
    """Each item's k nearest others (never itself; ties broken by index, so deterministic)."""
    d = distance.astype(np.float64, copy=True)
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, : min(k, len(d) - 1)]


def average_precision_at_k(order: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per query: average precision over its ranked top k (relevant = same label)."""
    relevant = labels[order] == labels[:, None]
    precision_at = np.cumsum(relevant, axis=1) / np.arange(1, order.shape[1] + 1)
    return (precision_at * relevant).sum(1) / np.maximum(relevant.sum(1), 1)


def chance_precision(labels: np.ndarray) -> float:
    """Expected precision of a random ranking: the mean share of the other items a query shares
    its label with."""
    return float(np.mean([(labels == c).sum() - 1 for c in labels]) / max(len(labels) - 1, 1))


def random_codes_map_at_k(labels: np.ndarray, bits: int, k: int, rounds: int = 200, seed: int = 0) -> dict[str, Any]:
    """What a model of random ``bits``-bit codes scores on Hamming mAP@k for these ``labels``:
    the mean, 95% range and 95th percentile over ``rounds`` draws of i.i.d. fair bits (Monte Carlo;
    ties in Hamming distance are broken by index, as for a trained model). This, not
    ``chance_precision``, is the trivial baseline of the metric: ``average_precision_at_k`` divides
    by the relevant items *found*, so a random ranking scores well above the share of relevant
    items.

    Parameters
    ----------
    labels : np.ndarray, shape (n,)
        The relevance label of each item (relevant = same label).
    bits : int
        The code length of the model judged.
    k : int
        The ranking depth.

    Examples
    --------
    >>> labels = np.repeat(np.arange(6), 6)
    >>> baseline = random_codes_map_at_k(labels, bits=32, k=10, rounds=50)
    >>> baseline["mean"] > chance_precision(labels)
    True
    """
    rng = np.random.default_rng(seed)
    values = np.array([average_precision_at_k(top_k(hamming_distance(rng.standard_normal((len(labels), bits))), k),
                                              labels).mean() for _ in range(rounds)])
    low, high = np.percentile(values, [2.5, 97.5])
    return {"mean": float(values.mean()), "ci": [float(low), float(high)], "p95": float(np.percentile(values, 95)),
            "rounds": int(rounds), "bits": int(bits)}


def ranking_metrics(distance: np.ndarray, labels: np.ndarray, tracks: np.ndarray, k: int) -> dict[str, float]:
    """Every item queries all others: mAP@k and precision@k with relevant = same label, and the
    share of queries for which another excerpt (segment) of the same track is in the top k."""
    order = top_k(distance, k)
    k = order.shape[1]
    relevant = labels[order] == labels[:, None]
    ap = average_precision_at_k(order, labels)
    same_track = tracks[order] == tracks[:, None]
    has_sibling = np.array([(tracks == t).sum() > 1 for t in tracks])
    return {"map_at_k": float(ap.mean()), "precision_at_k": float(relevant.mean()),
            "original_in_top_k": float(same_track.any(1)[has_sibling].mean()) if has_sibling.any() else float("nan"),
            "k": int(k), "queries": int(len(order))}


def rerank_distance(hamming: np.ndarray, cosine: np.ndarray, candidates: int) -> np.ndarray:
    """A ranking that takes each query's ``candidates`` nearest by Hamming distance and orders
    them by cosine distance; every other item ranks after them (by Hamming)."""
    shortlist = top_k(hamming, candidates)
    distance = 3.0 + hamming / max(float(hamming.max()), 1.0)  # cosine distances lie in [0, 2]
    rows = np.arange(len(hamming))[:, None]
    distance[rows, shortlist] = cosine[rows, shortlist]
    return distance


def lsh_codes(train: np.ndarray, vectors: np.ndarray, bits: int, seed: int = 0) -> np.ndarray:
    """Random-hyperplane LSH: sign of Gaussian projections of the centred vectors."""
    rng = np.random.default_rng(seed)
    planes = rng.normal(size=(vectors.shape[1], bits))
    return np.sign((vectors - train.mean(0)) @ planes + 1e-12)


def pca_rotation_codes(train: np.ndarray, vectors: np.ndarray, bits: int, seed: int = 0) -> np.ndarray:
    """PCA to ``bits`` dimensions (fewer if the vectors have fewer), a random orthogonal rotation
    (balances variance over bits), sign; extra bits, if any, are LSH bits."""
    from sklearn.decomposition import PCA

    dims = min(bits, train.shape[1], len(train))
    pca = PCA(n_components=dims, random_state=seed).fit(train)
    rotation, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dims, dims)))
    codes = np.sign(pca.transform(vectors) @ rotation + 1e-12)
    if dims < bits:
        codes = np.hstack([codes, lsh_codes(train, vectors, bits - dims, seed + 1)])
    return codes


def compression_curve(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                      dims: list[int], seed: int = 0) -> list[dict[str, float]]:
    """For each d: logistic-regression accuracy on the PCA-d projection (fit on train) and the
    distortion rate, the relative squared reconstruction error ||x - x^||^2 / ||x||^2 on test
    (of the standardised vectors)."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    a, b = scaler.transform(train_x), scaler.transform(test_x)
    rows = []
    for d in sorted({min(d, a.shape[1], len(a)) for d in dims}):
        pca = PCA(n_components=d, random_state=seed).fit(a)
        reduced_a, reduced_b = pca.transform(a), pca.transform(b)
        model = LogisticRegression(max_iter=2000).fit(reduced_a, train_y)
        rebuilt = pca.inverse_transform(reduced_b)
        distortion = float(((b - rebuilt) ** 2).sum() / max((b**2).sum(), 1e-12))
        rows.append({"dims": int(d), "accuracy": float((model.predict(reduced_b) == test_y).mean()),
                     "distortion_rate": distortion})
    return rows


def retrieval_table(train_vectors: np.ndarray, vectors: np.ndarray, labels: np.ndarray, tracks: np.ndarray,
                    hash_codes: dict[str, np.ndarray], k: int = 10, seed: int = 0,
                    rerank_candidates: int = 100) -> dict[str, Any]:
    """Semantic (cosine) ranking, each hash model's Hamming ranking and its Hamming shortlist
    re-ranked by cosine, and LSH / PCA+rotation codes of the semantic vectors at each hash
    model's bit budget."""
    cosine = cosine_distance(vectors)
    rows = {"semantic cosine": {**ranking_metrics(cosine, labels, tracks, k), "bits": None}}
    for name, codes in hash_codes.items():
        bits = codes.shape[1]
        hamming = hamming_distance(codes)
        rows[f"{name} Hamming"] = {**ranking_metrics(hamming, labels, tracks, k), "bits": bits}
        rows[f"{name} Hamming top {rerank_candidates} -> cosine"] = {
            **ranking_metrics(rerank_distance(hamming, cosine, rerank_candidates), labels, tracks, k), "bits": bits}
        rows[f"LSH {bits}-bit"] = {**ranking_metrics(hamming_distance(lsh_codes(train_vectors, vectors, bits, seed)),
                                                     labels, tracks, k), "bits": bits}
        rows[f"PCA+rotation {bits}-bit"] = {**ranking_metrics(
            hamming_distance(pca_rotation_codes(train_vectors, vectors, bits, seed)), labels, tracks, k), "bits": bits}
    bits = sorted({codes.shape[1] for codes in hash_codes.values()})
    return {"rankings": rows, "chance_precision": chance_precision(labels), "k": k,
            "random_codes": {str(b): random_codes_map_at_k(labels, b, k, seed=seed) for b in bits}}
