"""``chorus bench features``: the features flow against the pinned naive librosa chain.

One run measures, on the same rendered corpus:
- the naive chain (chorus.reference.naive_feature_maps), clip by clip in one separate process
  with BLAS/OpenMP pinned to one thread (as Dask's worker processes are);
- the real features flow on a warm local Dask cluster of 1 and of 2 single-threaded workers
  (cluster start and a warm-up run reported apart as ``startup_seconds``);
- the bare chain on the same workers (client.map of the per-file extraction, nothing written),
  so ``orchestration_overhead`` is what Prefect, staging, GX and the commit add;
- the largest dB difference between the naive maps and what the flow stored.
The last line printed is one JSON object.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from chorus.config import ChorusSettings, DemoSettings

SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def corpus_settings(quick: bool) -> DemoSettings:
    """Full: 144 rendered excerpts of ~26 s (about an hour of audio: the flow's fixed costs, ~1 s
    here, should not dominate). Quick: 4 short ones."""
    if quick:
        return DemoSettings(styles=["bach", "essenFolksong"], tracks_per_style=2, clip_seconds=6.0, measures=6,
                            users=8, communities=1)
    return DemoSettings(tracks_per_style=24, clip_seconds=30.0, measures=40, users=8, communities=1)


def _bare_extract(track_id: str, uri: str, settings: Any) -> int:
    """The per-file chain with nothing kept: only the segment count travels back."""
    from chorus.features import extract_track

    return extract_track(track_id, uri, settings).segments


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run_flow(settings: ChorusSettings) -> tuple[float, dict[str, Any]]:
    from flows.features import features as features_flow

    started = time.perf_counter()
    summary = features_flow(settings=settings)
    return time.perf_counter() - started, summary


def _drop_features(settings: ChorusSettings) -> None:
    from chorus.features import feature_dir
    from chorus.state import StateDir

    shutil.rmtree(feature_dir(StateDir(settings.state_dir).features, settings.features), ignore_errors=True)


def measure_cluster(settings: ChorusSettings, workers: int, tracks: Any, repeats: int) -> dict[str, Any]:
    """Warm a local cluster of ``workers``, then time the flow and the bare chain on it (medians
    of ``repeats``)."""
    import statistics

    from distributed import Client

    from chorus.compute import dask_scheduler

    started = time.perf_counter()
    local = settings.features.model_copy(update={"dask_workers": workers, "dask_address": None})
    # the local cluster a run starts by default, started once here so the timed runs find it warm
    with dask_scheduler(local) as address, Client(address) as client:
        on_cluster = settings.model_copy(update={"features": settings.features.model_copy(
            update={"dask_address": address})})
        # warm-up: imports on the workers, Prefect's API, the GX context, all on a cheap configuration
        cheap = on_cluster.model_copy(update={"features": on_cluster.features.model_copy(
            update={"hpss": False, "n_mels": 32})})
        _drop_features(cheap)
        _run_flow(cheap)
        client.run(lambda: __import__("bottleneck"))
        startup = time.perf_counter() - started

        ids, uris = tracks["track_id"].tolist(), tracks["uri"].tolist()
        flow_times, bare_times = [], []
        for _ in range(repeats):  # interleaved, so drift on this noisy machine hits both alike
            _drop_features(on_cluster)
            flow_seconds, summary = _run_flow(on_cluster)
            flow_times.append(flow_seconds)
            started = time.perf_counter()
            segments = sum(client.gather(client.map(_bare_extract, ids, uris, [settings.features] * len(ids),
                                                    pure=False)))
            bare_times.append(time.perf_counter() - started)
        worker_rss = client.run(_peak_rss_mib)
    counts = summary["counts"]
    if counts["segments_written"] != segments:
        raise RuntimeError(f"flow wrote {counts['segments_written']} segments, the bare chain made {segments}")
    return {"startup_seconds": startup, "flow_seconds": statistics.median(flow_times),
            "bare_seconds": statistics.median(bare_times), "flow_runs_s": [round(t, 2) for t in flow_times],
            "bare_runs_s": [round(t, 2) for t in bare_times],
            "segments": segments, "audio_seconds": counts["audio_seconds_extracted"],
            "worker_peak_rss_mib": max(worker_rss.values())}


def run_naive(settings: ChorusSettings, tracks: Any) -> dict[str, Any]:
    """The naive chain in a separate single-threaded process; it also compares its maps with the
    stored features (after its timing)."""
    job = {"settings": json.loads(settings.model_dump_json()), "tracks": tracks[["track_id", "uri"]].to_dict("records")}
    env = {**os.environ, **SINGLE_THREAD}
    done = subprocess.run([sys.executable, "-m", "benchmarks.features", "--naive"], input=json.dumps(job),
                          capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"naive reference process failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def naive_process(job: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from chorus.features import load_features, segment
    from chorus.reference import naive_feature_maps
    from chorus.state import StateDir

    settings = ChorusSettings.model_validate(job["settings"])
    fs = settings.features
    maps, seconds = {}, 0.0
    started = time.perf_counter()
    for row in job["tracks"]:
        maps[row["track_id"]] = naive_feature_maps(row["uri"], fs)
    seconds = time.perf_counter() - started
    stored = load_features(StateDir(settings.state_dir).features, fs)
    worst = 0.0
    for track_id, reference in maps.items():
        rows = (stored.segments["track_id"] == track_id).to_numpy()
        for name in ("logmel", "harmonic", "percussive"):
            expected, _, _ = segment(np.maximum(reference[name], fs.db_floor), fs)
            got = stored.maps[name][rows]
            if got.shape != expected.shape:
                raise RuntimeError(f"{track_id} {name}: stored {got.shape}, reference {expected.shape}")
            worst = max(worst, float(np.abs(got - expected).max()))
    return {"naive_seconds": seconds, "max_abs_db_diff": worst}


def run(settings: ChorusSettings, quick: bool = False, log: Any = print) -> dict[str, Any]:
    from chorus import stages

    root = Path(settings.state_dir) / "bench" / ("features-quick" if quick else "features")
    bench = settings.model_copy(update={"state_dir": root, "demo": corpus_settings(quick),
                                        "features": settings.features.model_copy(update={
                                            "shard_size": 4 if quick else 100, "dask_address": None})})
    log(f"rendering the benchmark corpus under {root} (cached)")
    stages.demo_stage(bench)
    stages.ingest_stage(bench)
    tracks = stages.load_tracks(bench)
    results = {}
    for workers in (1, 2):
        log(f"features flow on {workers} warm worker(s)")
        results[workers] = measure_cluster(bench, workers, tracks, repeats=1 if quick else 3)
    log("naive librosa chain, one process")
    naive = run_naive(bench, tracks)
    audio = results[2]["audio_seconds"]
    rtf = {w: audio / r["flow_seconds"] for w, r in results.items()}
    figures = {
        "benchmark": "features",
        "quick": quick,
        "clips": len(tracks),
        "audio_seconds": round(audio, 1),
        "segments": results[2]["segments"],
        "shard_size": bench.features.shard_size,
        "naive_rtf": round(audio / naive["naive_seconds"], 2),
        "chorus_rtf_1w": round(rtf[1], 2),
        "chorus_rtf_2w": round(rtf[2], 2),
        "bare_rtf_1w": round(audio / results[1]["bare_seconds"], 2),
        "bare_rtf_2w": round(audio / results[2]["bare_seconds"], 2),
        "speedup_vs_naive": round(rtf[2] / (audio / naive["naive_seconds"]), 2),
        "scaling_2w": round(rtf[2] / rtf[1], 3),
        "orchestration_overhead": round(results[2]["flow_seconds"] / results[2]["bare_seconds"] - 1, 4),
        "orchestration_overhead_1w": round(results[1]["flow_seconds"] / results[1]["bare_seconds"] - 1, 4),
        "repeats": len(results[2]["flow_runs_s"]),
        "flow_runs_s": {f"{w}w": r["flow_runs_s"] for w, r in results.items()},
        "bare_runs_s": {f"{w}w": r["bare_runs_s"] for w, r in results.items()},
        "startup_seconds": round(results[2]["startup_seconds"], 2),
        "startup_seconds_1w": round(results[1]["startup_seconds"], 2),
        "max_abs_db_diff": naive["max_abs_db_diff"],
        "flow_process_peak_rss_mib": round(_peak_rss_mib(), 1),
        "worker_peak_rss_mib": round(max(r["worker_peak_rss_mib"] for r in results.values()), 1),
        "targets": {"speedup_vs_naive": 10, "scaling_2w": 1.8, "orchestration_overhead": 0.05, "max_abs_db_diff": 0.01},
        "gpu": None,  # no CUDA here: the batched torch path is not measured
    }
    return figures


if __name__ == "__main__":  # the naive reference's own process
    if sys.argv[1:] == ["--naive"]:
        print(json.dumps(naive_process(json.loads(sys.stdin.read()))))
