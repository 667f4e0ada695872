"""``chorus bench features``: the features flow against the pinned naive librosa chain.

One run measures, on the same rendered corpus:
- the naive chain (chorus.reference.naive_feature_maps), clip by clip in one separate process
  with BLAS/OpenMP pinned to one thread (as Dask's worker processes are);
- the real features flow on a warm local Dask cluster of 1 and of 2 single-threaded workers
  (cluster start and a warm-up run reported apart as ``startup_seconds``), run as `chorus
  features` runs it;
- the bare chain on the same workers: the same per-file extraction and the same Parquet shards
  (schema, row groups) written to a scratch folder, through plain Dask (client.map per shard, no
  Prefect, no GX, no index), so ``orchestration_overhead`` is what orchestration adds, not storage;
- the four interleaved within each repeat; ratios are medians of per-repeat ratios;
- the largest dB difference between the naive maps and what the flow stored;
- the CPU cost of staging the stored feature set again in one process (``parquet_write_cpu_seconds``):
  the part of the flow's overhead that is writing its output;
- where CUDA is available, the batched torch chain (``gpu``: its speed, and its maps against the
  stored ones); ``--quick`` runs that comparison on the CPU (``torch_chain``).
The last line printed is one JSON object.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import statistics
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




def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run_flow(settings: ChorusSettings) -> tuple[float, dict[str, Any]]:
    from chorus_flows import local_run
    from chorus_flows.features import features as features_flow

    started = time.perf_counter()
    with local_run():  # as `chorus features` runs it
        summary = features_flow(settings=settings)
    return time.perf_counter() - started, summary


def _drop_features(settings: ChorusSettings) -> None:
    from chorus.features import feature_dir
    from chorus.state import StateDir

    shutil.rmtree(feature_dir(StateDir(settings.state_dir).features, settings.features), ignore_errors=True)


class WarmCluster:
    """A local cluster of ``workers`` single-threaded workers, started and warmed once (imports on
    the workers, Prefect's API, the GX context, on a cheap configuration); ``startup_seconds`` is
    that cost, kept out of the timed runs."""

    def __init__(self, settings: ChorusSettings, workers: int, stack: contextlib.ExitStack) -> None:
        from distributed import Client

        from chorus.compute import client_security, dask_scheduler

        started = time.perf_counter()
        local = settings.compute.model_copy(update={"workers": workers, "address": None})
        address = stack.enter_context(dask_scheduler(local))
        self.client = stack.enter_context(Client(address, security=client_security(address)))
        self.settings = settings.model_copy(update={"compute": settings.compute.model_copy(update={"address": address})})
        cheap = self.settings.model_copy(update={"features": self.settings.features.model_copy(
            update={"hpss": False, "n_mels": 32})})
        _drop_features(cheap)
        _run_flow(cheap)
        self.client.run(lambda: __import__("bottleneck"))
        self.startup_seconds = time.perf_counter() - started

    def flow_seconds(self) -> tuple[float, dict[str, Any]]:
        _drop_features(self.settings)
        return _run_flow(self.settings)

    def bare_seconds(self, tracks: Any) -> tuple[float, int]:
        """The flow's per-file work and shard writes through plain Dask, into a scratch folder."""
        from chorus.features import discard_shard, extract_track_or_problem, plan_shards, write_temp_shard

        fs = self.settings.features
        scratch = Path(self.settings.state_dir) / "bench-bare"
        shutil.rmtree(scratch, ignore_errors=True)
        started = time.perf_counter()
        staged = []
        for n, shard in enumerate(plan_shards(tracks, fs, scratch)):  # submitted together, earlier shards first
            ids, uris = shard.tracks["track_id"].tolist(), shard.tracks["uri"].tolist()
            files = self.client.map(extract_track_or_problem, ids, uris, [fs] * len(ids), pure=False, priority=-n)
            staged.append(self.client.submit(write_temp_shard, shard, files, fs, pure=False, priority=-n))
        written = self.client.gather(staged)
        seconds = time.perf_counter() - started
        for shard in written:
            discard_shard(shard)
        return seconds, sum(s.segments for s in written)


def measure(settings: ChorusSettings, tracks: Any, repeats: int) -> dict[int, dict[str, Any]]:
    """Both clusters warm at once (idle workers cost nothing), then per repeat the flow and the
    bare chain on 1 and on 2 workers, interleaved: drift on this noisy machine hits all four
    alike, and each repeat gives paired ratios."""
    with contextlib.ExitStack() as stack:
        clusters = {w: WarmCluster(settings, w, stack) for w in (1, 2)}
        runs: dict[int, dict[str, list[float]]] = {w: {"flow": [], "bare": []} for w in clusters}
        summary: dict[str, Any] = {}
        segments = 0
        for _ in range(repeats):
            for w, cluster in clusters.items():
                seconds, summary = cluster.flow_seconds()
                runs[w]["flow"].append(seconds)
                seconds, segments = cluster.bare_seconds(tracks)
                runs[w]["bare"].append(seconds)
        worker_rss = {w: max(c.client.run(_peak_rss_mib).values()) for w, c in clusters.items()}
        startup = {w: c.startup_seconds for w, c in clusters.items()}
    counts = summary["counts"]
    if counts["segments_written"] != segments:
        raise RuntimeError(f"flow wrote {counts['segments_written']} segments, the bare chain made {segments}")
    return {w: {"startup_seconds": startup[w], "flow_seconds": statistics.median(r["flow"]),
                "bare_seconds": statistics.median(r["bare"]), "flow_runs_s": r["flow"], "bare_runs_s": r["bare"],
                "segments": segments, "audio_seconds": counts["audio_seconds_extracted"],
                "worker_peak_rss_mib": worker_rss[w]} for w, r in runs.items()}


def paired_median(numerators: list[float], denominators: list[float]) -> float:
    """Median of the per-repeat ratios (each pair ran back to back)."""
    return statistics.median(a / b for a, b in zip(numerators, denominators, strict=True))


def run_naive(settings: ChorusSettings, tracks: Any) -> dict[str, Any]:
    """The naive chain in a separate single-threaded process; it also compares its maps with the
    stored features (after its timing)."""
    job = {"settings": json.loads(settings.model_dump_json()), "tracks": tracks[["track_id", "uri"]].to_dict("records")}
    env = {**os.environ, **SINGLE_THREAD}
    done = subprocess.run([sys.executable, "-m", "chorus_bench.features", "--naive"], input=json.dumps(job),
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


def parquet_write_seconds(settings: ChorusSettings, tracks: Any) -> float:
    """CPU seconds, in this one process, to stage the stored feature set again as the flow stages
    its shards (read back first, then written to a scratch folder and discarded): the storage part
    of the flow's cost, which the bare chain does not pay."""
    import tempfile

    import numpy as np

    from chorus.features import TrackFeatures, discard_shard, load_features, map_names, plan_shards, write_temp_shard
    from chorus.state import StateDir

    fs = settings.features
    stored = load_features(StateDir(settings.state_dir).features, fs)
    starts = stored.segments["start_s"].to_numpy()
    rows_of = stored.segments.groupby("track_id", sort=False).indices
    items = {t: TrackFeatures(t, {n: stored.maps[n][rows] for n in map_names(fs)}, stored.mfcc_stats[rows],
                              starts[rows], False, 0.0, np.zeros((len(rows), 3)))
             for t, rows in rows_of.items()}
    with tempfile.TemporaryDirectory(dir=settings.state_dir) as scratch:
        started = time.process_time()
        for shard in plan_shards(tracks, fs, Path(scratch)):
            shard.path.parent.mkdir(parents=True, exist_ok=True)
            discard_shard(write_temp_shard(shard, [items[t] for t in shard.tracks["track_id"]], fs))
        return time.process_time() - started


def run_device(settings: ChorusSettings, tracks: Any, device: str, log: Any = print) -> dict[str, Any]:
    """The torch chain on ``device``: files ``device_batch`` at a time in this process (decode and
    STFT on the CPU, the rest on the device), then the device part alone on precomputed
    magnitudes; and its maps against what the numpy flow stored."""
    import numpy as np
    import torch

    from chorus.features import load_features
    from chorus.features.torch_chain import TorchFeatureExtractor
    from chorus.state import StateDir

    fs = settings.features.model_copy(update={"backend": "torch", "torch_device": device})
    extractor = TorchFeatureExtractor(fs, device)
    sync = torch.cuda.synchronize if extractor.device.type == "cuda" else (lambda: None)
    ids, uris = tracks["track_id"].tolist(), tracks["uri"].tolist()
    step = fs.device_batch
    batches = [(ids[i : i + step], uris[i : i + step]) for i in range(0, len(ids), step)]
    log(f"torch chain on {device}: {len(batches)} batches of up to {step} files")
    extractor.extract_batch(*batches[0])  # warm-up: CUDA context, kernels
    sync()
    started = time.perf_counter()
    results = [r for b in batches for r in extractor.extract_batch(*b)]
    sync()
    end_to_end = time.perf_counter() - started
    magnitudes = [torch.from_numpy(extractor.stft_magnitude(extractor.decode(u))) for u in uris]
    seconds = []
    for _ in range(3):
        sync()
        started = time.perf_counter()
        for i in range(0, len(magnitudes), step):
            extractor.maps_of_magnitudes(magnitudes[i : i + step])
        sync()
        seconds.append(time.perf_counter() - started)
    stored = load_features(StateDir(settings.state_dir).features, settings.features)
    worst = 0.0
    for item in results:
        rows = (stored.segments["track_id"] == item.track_id).to_numpy()
        for name, maps in item.maps.items():
            worst = max(worst, float(np.abs(stored.maps[name][rows] - maps).max()))
    audio = sum(r.seconds for r in results)
    figures = {**extractor.describe(), "device_batch": step, "rtf_one_process": round(audio / end_to_end, 2),
               "maps_rtf_device_only": round(audio / statistics.median(seconds), 2),
               "max_abs_db_diff_vs_numpy_chain": worst}
    if extractor.device.type == "cuda":
        figures["peak_device_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return figures


def run(settings: ChorusSettings, quick: bool = False, log: Any = print) -> dict[str, Any]:
    import torch

    from chorus import stages

    root = Path(settings.state_dir) / "bench" / ("features-quick" if quick else "features")
    bench = settings.model_copy(update={"state_dir": root, "demo": corpus_settings(quick),
                                        "features": settings.features.model_copy(update={"shard_size": 4 if quick else 100}),
                                        "compute": settings.compute.model_copy(update={"address": None})})
    log(f"rendering the benchmark corpus under {root} (cached)")
    stages.demo_stage(bench)
    stages.ingest_stage(bench)
    tracks = stages.load_tracks(bench)
    repeats = 1 if quick else 5
    log(f"features flow and bare chain on 1 and 2 warm workers, {repeats} interleaved repeats")
    results = measure(bench, tracks, repeats)
    flow_process_rss = _peak_rss_mib()  # before the write cost below loads the whole feature set
    write_seconds = parquet_write_seconds(bench, tracks)
    log("naive librosa chain, one process")
    naive = run_naive(bench, tracks)
    # the torch chain: on CUDA where there is one; on the CPU in --quick, so its comparison with
    # the numpy chain runs in the test suite (on the CPU it is slower than numpy: not a figure)
    device = "cuda" if torch.cuda.is_available() else ("cpu" if quick else None)
    torch_chain = run_device(bench, tracks, device, log) if device else None
    audio = results[2]["audio_seconds"]
    rtf = {w: audio / r["flow_seconds"] for w, r in results.items()}
    figures = {
        # per core first: 1 worker against the one-process naive chain
        "speedup_vs_naive_per_core": round(rtf[1] / (audio / naive["naive_seconds"]), 2),
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
        "speedup_vs_naive_2w": round(rtf[2] / (audio / naive["naive_seconds"]), 2),
        # ratios: medians of the per-repeat ratios (pairs ran back to back); the ratios of the
        # medians beside them
        "scaling_2w": round(paired_median(results[1]["flow_runs_s"], results[2]["flow_runs_s"]), 3),
        "orchestration_overhead": round(paired_median(results[2]["flow_runs_s"], results[2]["bare_runs_s"]) - 1, 4),
        "orchestration_overhead_1w": round(paired_median(results[1]["flow_runs_s"], results[1]["bare_runs_s"]) - 1, 4),
        "bare_scaling_2w": round(paired_median(results[1]["bare_runs_s"], results[2]["bare_runs_s"]), 3),
        "ratios_of_medians": {"scaling_2w": round(rtf[2] / rtf[1], 3),
                              "orchestration_overhead": round(results[2]["flow_seconds"] / results[2]["bare_seconds"] - 1, 4),
                              "orchestration_overhead_1w": round(results[1]["flow_seconds"] / results[1]["bare_seconds"] - 1, 4)},
        "repeats": repeats,
        "flow_runs_s": {f"{w}w": [round(t, 2) for t in r["flow_runs_s"]] for w, r in results.items()},
        "bare_runs_s": {f"{w}w": [round(t, 2) for t in r["bare_runs_s"]] for w, r in results.items()},
        "startup_seconds": round(results[2]["startup_seconds"], 2),
        "startup_seconds_1w": round(results[1]["startup_seconds"], 2),
        "max_abs_db_diff": naive["max_abs_db_diff"],
        # what writing the feature set costs alone (CPU seconds, one process), and that cost spread
        # over 2 workers as a share of the bare chain's time: the part of the 2-worker overhead
        # that is storage, not orchestration
        "parquet_write_cpu_seconds": round(write_seconds, 3),
        "parquet_write_share_2w": round(write_seconds / 2 / results[2]["bare_seconds"], 4),
        "flow_process_peak_rss_mib": round(flow_process_rss, 1),
        "worker_peak_rss_mib": round(max(r["worker_peak_rss_mib"] for r in results.values()), 1),
        "targets": {"speedup_vs_naive_per_core": 6, "scaling_2w": 1.8, "orchestration_overhead": 0.05,
                    "orchestration_overhead_1w": 0.05, "max_abs_db_diff": 0.01},
        # the batched torch chain where CUDA is available (None: no GPU, not measured)
        "gpu": torch_chain if device == "cuda" else None,
        "torch_chain": torch_chain,
    }
    return figures


if __name__ == "__main__":  # the naive reference's own process
    if sys.argv[1:] == ["--naive"]:
        print(json.dumps(naive_process(json.loads(sys.stdin.read()))))
