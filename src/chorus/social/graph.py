"""The follow graph as a sparse matrix, and hop-distance weights from many targets at once.

Users are rows 0..n-1 of a CSR adjacency A (A[u, v] = 1 when u follows v). Breadth-first search
from a batch of targets is sparse frontier expansion: frontier F (targets x users) -> F @ A, minus
what was already visited, one product per hop (figures in docs/benchmarks.md, "Voting").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

Weighting = Literal["inverse", "exponential", "table"]


@dataclass(frozen=True)
class SocialGraph:
    user_ids: np.ndarray  # position -> opaque user id
    index: pd.Index  # user id -> position
    adjacency: sp.csr_matrix  # (n, n) float32, 1 where row follows column

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def positions(self, user_ids: Sequence[str] | np.ndarray | pd.Series) -> np.ndarray:
        return self.index.get_indexer(pd.Index(user_ids))


@dataclass(frozen=True)
class GraphBuild:
    graph: SocialGraph
    rejects: pd.DataFrame  # follower, followee, reason
    counts: dict[str, int]


def build_graph(users: pd.DataFrame, follows: pd.DataFrame) -> GraphBuild:
    """CSR follow graph. Edges naming an unknown user are rejected with the reason; self-follows
    and duplicate edges are dropped and counted (they carry no information)."""
    ids = users["user_id"].astype(str).to_numpy()
    index = pd.Index(ids)
    follower = index.get_indexer(follows["follower"].astype(str))
    followee = index.get_indexer(follows["followee"].astype(str))
    unknown = (follower < 0) | (followee < 0)
    reasons = np.where(follower < 0, "unknown follower", "unknown followee")
    rejects = pd.DataFrame({
        "follower": follows["follower"].to_numpy()[unknown],
        "followee": follows["followee"].to_numpy()[unknown],
        "reason": reasons[unknown],
    })
    adjacency, self_follows, duplicates = follow_matrix(follower[~unknown], followee[~unknown], len(ids))
    counts = {"users": len(ids), "follows_in": len(follows), "follows_kept": int(adjacency.nnz),
              "follows_rejected": int(unknown.sum()), "self_follows_dropped": self_follows,
              "duplicate_follows_dropped": duplicates}
    return GraphBuild(SocialGraph(ids, index, adjacency), rejects, counts)


def follow_matrix(src: np.ndarray, dst: np.ndarray, n_users: int) -> tuple[sp.csr_matrix, int, int]:
    """(n x n) 0/1 CSR adjacency from follower/followee positions, with how many self-follows
    and duplicate edges were dropped."""
    self_follow = src == dst
    src, dst = src[~self_follow], dst[~self_follow]
    keys = np.unique(src.astype(np.int64) * n_users + dst)
    adjacency = sp.csr_matrix((np.ones(len(keys), np.float32), (keys // n_users, keys % n_users)),
                              shape=(n_users, n_users))
    return adjacency, int(self_follow.sum()), len(src) - len(keys)


def hop_weights(weighting: Weighting, max_depth: int, base: float = 2.0,
                table: Sequence[float] | None = None) -> np.ndarray:
    """w(d) for d = 1..max_depth: 1/d, base^-(d-1), or a table."""
    depths = np.arange(1, max_depth + 1, dtype=np.float64)
    if weighting == "inverse":
        return 1.0 / depths
    if weighting == "exponential":
        return base ** -(depths - 1)
    if table is None or len(table) < max_depth:
        raise ValueError(f"weighting 'table' needs {max_depth} weights (one per depth), got {table}")
    return np.asarray(table[:max_depth], np.float64)


def hop_distances(graph: SocialGraph, targets: np.ndarray, max_depth: int) -> sp.csr_matrix:
    """(targets x users) hop distance 1..max_depth where reachable; the target itself is absent.

    Multi-source BFS: each hop is one sparse product of the frontier with the adjacency."""
    k = len(targets)
    rows = np.arange(k)
    frontier = sp.csr_matrix((np.ones(k, np.float32), (rows, targets)), shape=(k, graph.n_users))
    visited = frontier.copy()
    parts = []
    for depth in range(1, max_depth + 1):
        reached = frontier @ graph.adjacency
        reached.data[:] = 1.0
        # new = reached and not visited; visited is a superset-free 0/1 matrix, so subtracting
        # the overlap leaves exactly the unvisited users
        new = reached - reached.multiply(visited)
        new.eliminate_zeros()
        if new.nnz == 0:
            break
        new = new.tocsr()
        new.data[:] = 1.0
        parts.append(new * np.float32(depth))
        visited = visited + new
        frontier = new
    if not parts:
        return sp.csr_matrix((k, graph.n_users), dtype=np.float32)
    return sum(parts[1:], parts[0]).tocsr()


def reach_weights(graph: SocialGraph, targets: np.ndarray, max_depth: int, weights: np.ndarray) -> sp.csr_matrix:
    """(targets x users) w(d(target, user)) for users within ``max_depth`` hops, 0 elsewhere."""
    distances = hop_distances(graph, targets, max_depth)
    out = distances.copy()
    out.data = weights[distances.data.astype(np.int64) - 1].astype(np.float32)
    return out
