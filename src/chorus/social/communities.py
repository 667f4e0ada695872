"""Communities of the follow graph, for listeners' groups where the users table has no group
column (or ``personal.groups: follow_graph``): Louvain modularity optimisation (Blondel et al.
2008) from networkx on the undirected follow graph. networkx builds its graph in Python objects:
about a minute and 2 GiB at a million users (docs/benchmarks.md), which is why the users table's
group column is the default."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from chorus.social.graph import SocialGraph


def follow_communities(graph: SocialGraph, resolution: float = 0.5, seed: int = 0) -> np.ndarray:
    """A community number per user position, shape (users,), numbered 0.. by size (largest first);
    ``resolution`` below 1 favours fewer, larger communities (a random graph splits into many at 1).

    Examples
    --------
    >>> import pandas as pd
    >>> from chorus.social.graph import build_graph
    >>> users = pd.DataFrame({"user_id": list("abcdef")})
    >>> follows = pd.DataFrame({"follower": list("abcdef"), "followee": list("bcaefd")})
    >>> follow_communities(build_graph(users, follows).graph).tolist()
    [0, 0, 0, 1, 1, 1]
    """
    import networkx as nx

    adjacency = graph.adjacency.astype(bool)
    undirected = sp.triu((adjacency + adjacency.T).astype(np.int8), k=1).tocoo()
    network = nx.Graph()
    network.add_nodes_from(range(graph.n_users))
    network.add_edges_from(zip(undirected.row.tolist(), undirected.col.tolist(), strict=True))
    found = sorted(nx.algorithms.community.louvain_communities(network, resolution=resolution, seed=seed),
                   key=lambda c: (-len(c), min(c)))
    labels = np.empty(graph.n_users, np.int64)
    for number, members in enumerate(found):
        labels[list(members)] = number
    return labels
