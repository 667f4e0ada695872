"""``chorus bench scale``: how the cost of ingest, features and labels grows with the catalogue.

Per size (1,000, 4,000 and 16,000 tracks; ``--quick``: 100 and 400), a synthetic corpus of
4-second clips (a chord per mood, each clip its own partials and noise, so no two are
duplicates) and a crowd scaled alike (one user per track, playlists as the demo's) are made
outside the timing; then the ingest, features and labels flows run on it, as ``chorus ingest``,
``chorus features`` and ``chorus labels`` run them, each in a fresh process (so a stage's peak
memory is its own, not what an earlier stage or size left). Per size and stage: wall seconds,
seconds per track, the flow process's peak resident memory and its busiest Dask worker's, and
the rows written.

Gated figures (``targets``), which fixed costs cannot hide: ``marginal_ms_per_track`` (per stage,
the seconds one more track costs, between the two largest sizes) against the same between the two
smallest (``marginal_growth``; with two sizes, against the smallest size's seconds per track), and
``memory_per_added_track_kib`` (per stage, how much the flow process's peak above its
post-import baseline grows per added track, from the smallest size to the largest: a stage that
streams holds a shard, not the catalogue). Also reported: ``per_track_growth`` and
``rss_growth`` (seconds per track and whole-process peak, largest size over smallest), which
include start-up and imports and so understate growth.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf

from chorus import MOODS
from chorus.config import DemoSettings, load_settings
from chorus.datasets.demo import simulate_crowd
from chorus.io import file_sha256, track_id_for
from chorus.state import StateDir, runtime_environment
from chorus_bench.memory import PeakMemory

SIZES = (1000, 4000, 16000)
QUICK_SIZES = (100, 400)
SR = 22050
CLIP_SECONDS = 4.0
STAGES = ("ingest", "features", "labels")
MARGINAL_GROWTH_TARGET = 1.25  # a track added to the largest catalogue costs at most 1.25x one added to the smallest
MEMORY_PER_TRACK_TARGET_KIB = 64.0  # the flow process's peak grows by at most this per track (a few table rows' worth)


def write_corpus(root: Path, tracks: int, seed: int = 11) -> Path:
    """``tracks`` FLAC clips under ``root/audio``, ``root/manifest.csv`` (uri, mood, split) and
    the crowd's tables under ``root/social``; returns the manifest's path."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(CLIP_SECONDS * SR)) / SR
    rows = []
    for n in range(tracks):
        mood = MOODS[n % len(MOODS)]
        root_hz = 110.0 * 2 ** (MOODS.index(mood) / 12)
        partials = root_hz * np.array([1.0, 1.25, 1.5, 2.0]) * (1 + 0.01 * rng.standard_normal(4))
        y = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in partials) / 4
        y = (0.3 * y * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.5, 4) * t)) + 0.01 * rng.standard_normal(t.size))
        path = root / "audio" / mood / f"clip-{n:06d}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, y.astype(np.float32), SR, subtype="PCM_16")
        rows.append({"uri": str(path.relative_to(root)), "mood": mood, "split": ("train", "train", "train", "valid", "test")[n % 5],
                     "sha256": file_sha256(path)})
    manifest = pd.DataFrame(rows)
    crowd = simulate_crowd(pd.DataFrame({"track_id": [track_id_for(d) for d in manifest["sha256"]], "mood": manifest["mood"]}),
                           DemoSettings(users=tracks, seed=seed))
    (root / "social").mkdir(parents=True, exist_ok=True)
    for name, table in crowd.items():
        table.to_csv(root / "social" / f"{name}.csv", index=False)
    manifest.drop(columns="sha256").to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def measure_stage(root: str, workers: int, stage: str) -> dict[str, Any]:
    """In a fresh process, as ``chorus <stage>`` runs it: one stage's flow on the corpus under
    ``root`` (the stages before it already run), its wall time, peaks and rows written."""
    from prefect import flow

    from chorus_flows import local_run
    from chorus_flows.features import features as features_flow
    from chorus_flows.ingest import ingest as ingest_flow
    from chorus_flows.labels import labels as labels_flow

    @flow(name="bench-scale-warm-up")
    def warm_up() -> None:
        """Connects to Prefect's API (or starts a temporary one) before anything is timed."""

    base = Path(root)
    settings = load_settings(overrides={"state_dir": str(base / "state"),
                                        "ingest": {"manifest": str(base / "manifest.csv"), "social_dir": str(base / "social")},
                                        "compute": {"workers": workers}})
    flows: dict[str, Callable[..., dict[str, Any]]] = {"ingest": ingest_flow, "features": features_flow, "labels": labels_flow}
    import psutil

    with local_run(), PeakMemory() as memory:
        warm_up()
        memory.mark()
        baseline_mib = psutil.Process().memory_info().rss / 2**20  # imports and Prefect's client, before the stage
        started = time.perf_counter()
        summary = flows[stage](settings=settings)
        seconds = time.perf_counter() - started
        flow_mib, worker_mib = memory.mark()
    return {"seconds": round(seconds, 2), "flow_rss_mib": round(flow_mib, 1), "worker_rss_mib": round(worker_mib, 1),
            "flow_rss_above_baseline_mib": round(max(flow_mib - baseline_mib, 0.0), 1),
            "rows_written": _rows_written(stage, summary)}


def _measure_in_child(root: Path, workers: int, stage: str, api: dict[str, str]) -> dict[str, Any]:
    """``measure_stage`` in a fresh interpreter (its peak memory is this stage's own; its Dask
    nannies need a process that may have children), the row handed back in a file."""
    out = root / f"{stage}.json"
    code = ("import json, sys; from chorus_bench.scale import measure_stage; "
            "open(sys.argv[4], 'w').write(json.dumps(measure_stage(sys.argv[1], int(sys.argv[2]), sys.argv[3])))")
    # as a chorus command runs a flow: telemetry off, Prefect's home under the state directory
    env = {**os.environ, **runtime_environment(StateDir(root / "state").create()), **api}
    # its output goes to a file, not to our pipes, which a server it started could hold open
    log_path = root / f"{stage}.log"
    with log_path.open("w") as output:
        done = subprocess.run([sys.executable, "-c", code, str(root), str(workers), stage, str(out)], env=env,
                              stdout=output, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{stage} on {root.name} tracks failed (exit {done.returncode}):\n{log_path.read_text()[-3000:]}")
    return dict(json.loads(out.read_text()))


def _rows_written(stage: str, summary: dict[str, Any]) -> int:
    """Tracks stored by ingest, segments written by features, label rows written by labels."""
    if stage == "ingest":
        return int(summary["ingest"]["counts"].get("tracks", 0))
    if stage == "features":
        return int(summary["counts"].get("segments_written", 0))
    return int(summary["counts"].get("rows", 0))


@contextlib.contextmanager
def prefect_api() -> Iterator[dict[str, str]]:
    """The Prefect API the stages' processes share: the user's (PREFECT_API_URL), or a temporary
    one started once here, so that no process pays the temporary API's start-up per stage."""
    if os.environ.get("PREFECT_API_URL"):
        yield {}
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start(timeout=90)
    try:
        yield {"PREFECT_API_URL": server.api_url}
    finally:
        server.stop()


def run(quick: bool = False, workers: int = 2, log: Callable[[str], None] = print) -> dict[str, Any]:
    sizes = QUICK_SIZES if quick else SIZES
    per_size: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="chorus-scale-") as scratch, prefect_api() as api:
        for tracks in sizes:
            root = Path(scratch) / f"{tracks}"
            started = time.perf_counter()
            write_corpus(root, tracks)
            log(f"{tracks} tracks: corpus written in {time.perf_counter() - started:.0f} s")
            rows = {stage: _measure_in_child(root, workers, stage, api) for stage in STAGES}
            for stage, row in rows.items():
                row["seconds_per_track"] = round(row["seconds"] / tracks, 5)
                log(f"{tracks:>6} tracks {stage:>9}: {row['seconds']:8.1f} s, {1000 * row['seconds_per_track']:.2f} ms/track, "
                    f"flow {row['flow_rss_mib']:.0f} MiB, worker {row['worker_rss_mib']:.0f} MiB, {row['rows_written']} rows")
            per_size[tracks] = rows
    return summarise(per_size, quick, workers)


def summarise(per_size: dict[int, dict[str, Any]], quick: bool, workers: int) -> dict[str, Any]:
    """The per-size table and the growth figures (largest size over smallest, per stage)."""
    sizes = sorted(per_size)
    small, large = per_size[sizes[0]], per_size[sizes[-1]]

    def ratio(key: str) -> dict[str, float]:
        return {s: round(large[s][key] / small[s][key], 3) for s in STAGES if small[s][key]}

    def marginal(a: int, b: int, stage: str) -> float:
        return (per_size[b][stage]["seconds"] - per_size[a][stage]["seconds"]) / (b - a)

    per_track, flow_rss, worker_rss = ratio("seconds_per_track"), ratio("flow_rss_mib"), ratio("worker_rss_mib")
    figures: dict[str, Any] = {
        "quick": quick, "workers": workers, "sizes": sizes, "clip_seconds": CLIP_SECONDS,
        "per_track_growth": max(per_track.values()), "rss_growth": max(flow_rss.values()),
        "worker_rss_growth": max(worker_rss.values(), default=None),
        "per_track_growth_by_stage": per_track, "rss_growth_by_stage": flow_rss, "worker_rss_growth_by_stage": worker_rss,
    }
    late = {s: marginal(sizes[-2], sizes[-1], s) for s in STAGES}
    early = {s: marginal(sizes[0], sizes[1], s) if len(sizes) >= 3 else small[s]["seconds_per_track"] for s in STAGES}
    figures["marginal_ms_per_track"] = {s: round(1000 * late[s], 3) for s in STAGES}
    figures["marginal_growth"] = {s: round(late[s] / early[s], 3) for s in STAGES if early[s] > 0}
    added = sizes[-1] - sizes[0]
    figures["memory_per_added_track_kib"] = {
        s: round(1024 * (large[s]["flow_rss_above_baseline_mib"] - small[s]["flow_rss_above_baseline_mib"]) / added, 2)
        for s in STAGES}
    figures["targets"] = {"marginal_growth": MARGINAL_GROWTH_TARGET, "memory_per_added_track_kib": MEMORY_PER_TRACK_TARGET_KIB}
    figures["met"] = {"marginal_growth": max(figures["marginal_growth"].values(), default=0) <= MARGINAL_GROWTH_TARGET,
                      "memory_per_added_track_kib": max(figures["memory_per_added_track_kib"].values()) <= MEMORY_PER_TRACK_TARGET_KIB}
    figures["per_size"] = {str(n): per_size[n] for n in sizes}
    return figures


def plot(figures: dict[str, Any], path: Path) -> None:
    """Seconds per track and the flow process's peak memory against the catalogue's size, one
    line per stage (log-scaled sizes), as an SVG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = figures["sizes"]
    fig, (cost, memory) = plt.subplots(1, 2, figsize=(9, 3.4))
    for stage in STAGES:
        rows = [figures["per_size"][str(n)][stage] for n in sizes]
        cost.plot(sizes, [1000 * r["seconds_per_track"] for r in rows], marker="o", label=stage)
        memory.plot(sizes, [r["flow_rss_mib"] for r in rows], marker="o", label=stage)
    for axis, title in ((cost, "milliseconds per track"), (memory, "flow process peak RSS (MiB)")):
        axis.set_xscale("log")
        axis.set_xticks(sizes, [f"{n:,}" for n in sizes])
        axis.set_xlabel("tracks")
        axis.set_title(title, fontsize=10)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
    cost.legend(fontsize=8)
    fig.suptitle(f"chorus bench scale ({figures['workers']} Dask workers, {figures['clip_seconds']:g} s clips)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="svg")
    plt.close(fig)

