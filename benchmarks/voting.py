"""``chorus bench voting``: personal truths over a million-user follow graph, against networkx.

1. Generate (seeded, parameters printed) a heavy-tailed follow graph and (user, song, mood) tag
   rows into Parquet.
2. chorus, in its own process: load + CSR graph + tag matrices (``load_seconds``), global truth
   (``global_seconds``), personal truths of every target by batched multi-source BFS
   (``personal_seconds``), and its peak RSS.
3. The pinned naive reference, in another process: networkx single_source_shortest_path_length
   with cutoff, then a pandas groupby, per target on a sample of the same targets (graph building
   excluded from its timing). Its truths for the sample are compared with chorus's.
The last line printed is one JSON object.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

FULL = {"users": 1_000_000, "follows": 10_000_000, "tag_rows": 5_000_000, "songs": 200_000, "targets": 10_000,
        "naive_targets": 20, "max_depth": 3, "seed": 0, "follow_shape": 1.5, "popularity_shape": 1.2}
QUICK = {"users": 2_000, "follows": 16_000, "tag_rows": 10_000, "songs": 300, "targets": 200,
         "naive_targets": 40, "max_depth": 3, "seed": 0, "follow_shape": 1.5, "popularity_shape": 1.2}


def generate(params: dict[str, Any], folder: Path) -> None:
    """Heavy-tailed out-degrees (Pareto) and followees drawn by Pareto popularity; tag rows from
    Pareto-active users on Zipf-popular songs, each song leaning to two moods."""
    import pandas as pd

    from chorus.io import write_parquet

    rng = np.random.default_rng(params["seed"])
    n, m = params["users"], params["follows"]
    activity = rng.pareto(params["follow_shape"], n) + 1
    followers = rng.choice(n, size=m, p=activity / activity.sum())
    popularity = rng.pareto(params["popularity_shape"], n) + 1
    followees = rng.choice(n, size=m, p=popularity / popularity.sum())
    ids = np.char.add("u", np.arange(n).astype(str))
    write_parquet(pd.DataFrame({"user_id": ids}), folder / "users.parquet")
    write_parquet(pd.DataFrame({"follower": followers.astype(np.int32), "followee": followees.astype(np.int32)}),
                  folder / "follows.parquet")
    t = params["tag_rows"]
    taggers = rng.choice(n, size=t, p=activity / activity.sum())
    song_rank = np.minimum(rng.zipf(1.3, size=t) - 1, params["songs"] - 1)
    lean = rng.integers(0, 12, size=(params["songs"], 2))
    mood = np.where(rng.random(t) < 0.6, lean[song_rank, rng.integers(0, 2, size=t)], rng.integers(0, 12, size=t))
    write_parquet(pd.DataFrame({"user": taggers.astype(np.int32), "song": song_rank.astype(np.int32),
                                "mood": mood.astype(np.int8)}), folder / "tag_rows.parquet")
    rng_targets = np.random.default_rng(params["seed"] + 1)
    targets = np.sort(rng_targets.choice(n, size=params["targets"], replace=False))
    np.save(folder / "targets.npy", targets)


def chorus_process(folder: Path, params: dict[str, Any]) -> dict[str, Any]:
    import pandas as pd
    import scipy.sparse as sp

    from chorus.config import LabelSettings
    from chorus.social.graph import SocialGraph, follow_matrix
    from chorus.social.voting import personal_truths, tag_matrix_from_rows, weighted_vote

    started = time.perf_counter()
    users = pd.read_parquet(folder / "users.parquet")["user_id"].to_numpy()
    follows = pd.read_parquet(folder / "follows.parquet")
    rows = pd.read_parquet(folder / "tag_rows.parquet")
    # build_graph's edge rules on the generator's integer ids (no id lookup needed)
    adjacency, _, _ = follow_matrix(follows["follower"].to_numpy(np.int64), follows["followee"].to_numpy(np.int64),
                                    len(users))
    graph = SocialGraph(users, pd.Index(users), adjacency)
    tags = tag_matrix_from_rows(rows["user"].to_numpy(), rows["song"].to_numpy(), rows["mood"].to_numpy(np.int64),
                                len(users), np.arange(params["songs"]))
    load_seconds = time.perf_counter() - started

    started = time.perf_counter()
    weighted_vote(sp.csr_matrix(np.ones((1, len(users)), np.float32)), tags)
    global_seconds = time.perf_counter() - started

    # the plain weighted vote (no prior): what the naive reference computes
    settings = LabelSettings(max_depth=params["max_depth"], weighting="inverse", target_batch=1000, prior_weight=0.0)
    targets = np.load(folder / "targets.npy")
    started = time.perf_counter()
    personal = personal_truths(graph, tags, users[targets].tolist(), settings)
    personal_seconds = time.perf_counter() - started
    sample = targets[: params["naive_targets"]]
    check = personal_truths(graph, tags, users[sample].tolist(), settings)
    return {
        "load_seconds": load_seconds, "global_seconds": global_seconds, "personal_seconds": personal_seconds,
        "personal_pairs": int(len(personal.row)),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "sample": [{"target": int(sample[r]), "song": int(s), "scores": sc.tolist()}
                   for r, s, sc in zip(check.row, check.song, check.scores, strict=True)],
    }


def naive_process(folder: Path, params: dict[str, Any]) -> dict[str, Any]:
    import networkx as nx
    import pandas as pd

    from chorus.reference import naive_personal_truth
    from chorus.social.graph import hop_weights

    follows = pd.read_parquet(folder / "follows.parquet")
    graph = nx.DiGraph()
    graph.add_nodes_from(range(params["users"]))
    graph.add_edges_from(zip(follows["follower"].to_numpy(), follows["followee"].to_numpy(), strict=True))
    graph.remove_edges_from(nx.selfloop_edges(graph))
    rows = pd.read_parquet(folder / "tag_rows.parquet").drop_duplicates().astype({"mood": np.int64})
    weights = hop_weights("inverse", params["max_depth"])
    sample = np.load(folder / "targets.npy")[: params["naive_targets"]]
    truths = []
    started = time.perf_counter()
    for target in sample:
        truths.append(naive_personal_truth(graph, rows, int(target), params["max_depth"], weights))
    seconds = time.perf_counter() - started
    out = []
    for target, truth in zip(sample, truths, strict=True):
        for (song, mood), score in truth.items():
            out.append({"target": int(target), "song": int(song), "mood": int(mood), "score": float(score)})
    return {"naive_seconds_per_target": seconds / len(sample), "sample": out}


def compare(chorus_sample: list[dict[str, Any]], naive_sample: list[dict[str, Any]]) -> dict[str, Any]:
    ours = {}
    for item in chorus_sample:
        for mood, score in enumerate(item["scores"]):
            if score > 0:
                ours[(item["target"], item["song"], mood)] = score
    theirs = {(r["target"], r["song"], r["mood"]): r["score"] for r in naive_sample if r["score"] > 0}
    common = set(ours) & set(theirs)
    worst = max((abs(ours[k] - theirs[k]) for k in common), default=0.0)
    return {"same_entries": set(ours) == set(theirs), "entries": len(theirs), "max_abs_score_diff": worst}


def _child(role: str, folder: Path, params: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "chorus_bench.voting", role, str(folder), json.dumps(params)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{role} process failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(state_dir: Path, quick: bool = False, log: Any = print) -> dict[str, Any]:
    params = QUICK if quick else FULL
    folder = Path(state_dir) / "bench" / ("voting-quick" if quick else "voting")
    stamp = folder / "params.json"
    if not stamp.exists() or json.loads(stamp.read_text()) != params:
        log(f"generating the graph and tag rows under {folder}: {params}")
        folder.mkdir(parents=True, exist_ok=True)
        generate(params, folder)
        stamp.write_text(json.dumps(params))
    log("chorus: CSR graph, batched multi-source BFS, sparse vote products (own process)")
    ours = _child("--chorus", folder, params)
    log(f"naive: networkx BFS + pandas groupby on {params['naive_targets']} targets (own process)")
    naive = _child("--naive", folder, params)
    per_target = ours["personal_seconds"] / params["targets"]
    return {
        "benchmark": "voting",
        "quick": quick,
        "generator": params,
        "users": params["users"],
        "follows": params["follows"],
        "tag_rows": params["tag_rows"],
        "targets": params["targets"],
        "max_depth": params["max_depth"],
        "load_seconds": round(ours["load_seconds"], 3),
        "global_seconds": round(ours["global_seconds"], 3),
        "personal_seconds": round(ours["personal_seconds"], 3),
        "personal_pairs": ours["personal_pairs"],
        "peak_rss_gib": round(ours["peak_rss_gib"], 3),
        "naive_targets": params["naive_targets"],
        "naive_seconds_per_target": round(naive["naive_seconds_per_target"], 5),
        "chorus_seconds_per_target": round(per_target, 6),
        "speedup_vs_naive": round(naive["naive_seconds_per_target"] / per_target, 1),
        "agreement": compare(ours["sample"], naive["sample"]),
        "targets_met": {"personal_seconds<=10": ours["personal_seconds"] <= 10,
                        "speedup_vs_naive>=50": naive["naive_seconds_per_target"] / per_target >= 50,
                        "peak_rss_gib<=6": ours["peak_rss_gib"] <= 6},
    }


if __name__ == "__main__":
    role, where, raw = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    result = chorus_process(where, raw) if role == "--chorus" else naive_process(where, raw)
    print(json.dumps(result))
