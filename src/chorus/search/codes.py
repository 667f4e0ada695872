"""Binary codes: +-1 per bit in models and metrics, packed 8 bits per byte for faiss (bit i of a
code is 1 where the model's output i is >= 0; numpy's packbits order, most significant bit first)."""

from __future__ import annotations

import numpy as np


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """Signs packed 8 bits per byte.

    Parameters
    ----------
    codes : np.ndarray, shape (n, bits), any real values (>= 0 is a 1 bit); bits a multiple of 8

    Returns
    -------
    np.ndarray, shape (n, bits // 8), uint8
    """
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] % 8:
        raise ValueError(f"codes must be (n, bits) with bits a multiple of 8, got shape {codes.shape}")
    return np.packbits(codes >= 0, axis=1)


def unpack_codes(packed: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Inverse of ``pack_codes``.

    Parameters
    ----------
    packed : np.ndarray, shape (n, bytes), uint8
    bits : int, optional; how many bits to keep (default 8 * bytes)

    Returns
    -------
    np.ndarray, shape (n, bits), float32 of +-1
    """
    unpacked = np.unpackbits(np.asarray(packed, np.uint8), axis=1, count=bits)
    return np.where(unpacked == 1, 1.0, -1.0).astype(np.float32)


def hamming_scan(queries: np.ndarray, packed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force Hamming top-k over packed codes in numpy (the reference the faiss indexes are
    checked against), ties broken by the lower id.

    Parameters
    ----------
    queries : np.ndarray, shape (q, bytes), uint8
    packed : np.ndarray, shape (n, bytes), uint8
    k : int; neighbours per query (at most n)

    Returns
    -------
    distances : np.ndarray, shape (q, k), int32
    ids : np.ndarray, shape (q, k), int64; rows of ``packed``
    """
    n = len(packed)
    k = min(k, n)
    distances = np.empty((len(queries), k), np.int32)
    ids = np.empty((len(queries), k), np.int64)
    rows = np.arange(n, dtype=np.int64)
    for i, query in enumerate(np.asarray(queries, np.uint8)):
        d = np.bitwise_count(np.bitwise_xor(packed, query)).sum(axis=1, dtype=np.int32)
        key = d.astype(np.int64) * n + rows  # distance, then id: a total order
        nearest = np.argpartition(key, k - 1)[:k] if k < n else rows
        order = nearest[np.argsort(key[nearest])]
        distances[i], ids[i] = d[order], order
    return distances, ids
