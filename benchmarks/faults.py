"""``chorus bench faults``: each fault injected into a corpus of good files, the ingest and features
stages run on it, and one row per fault: was it survived, and where did every record go.

Per fault, ``records_in`` files go in beside ``GOOD`` good ones; ``records_out`` of the fault's
files come out as extracted tracks, ``quarantined`` as quarantine rows with a reason; ``lost``
(in - out - quarantined) and ``duplicated`` (tracks stored twice) must be 0; ``survived`` means
the stages finished, the good files were all extracted, and nothing was lost or duplicated.
``recover_seconds`` is the stages' wall time on the faulty corpus (faults that share feature
settings share one corpus and one run). The last line printed is one
JSON object: ``{"faults": [{"fault", "survived", "records_in", "records_out", "quarantined",
"lost", "duplicated", "recover_seconds"}, ...]}``.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf
from distributed import Client

from chorus.compute import client_security, dask_scheduler
from chorus.config import ChorusSettings, load_settings
from chorus.features import load_features, plan_shards
from chorus.io import read_table
from chorus.stages import extract_shard, finish_features, ingest_stage, load_tracks
from chorus.state import StateDir
from chorus_bench.memory import PeakMemory

SR = 22050
GOOD = 3
FAULT_DIR = "zz-fault"


def _tone(seconds: float, freq: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _wav(path: Path, y: np.ndarray, subtype: str = "PCM_16") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, y, SR, subtype=subtype)


def ogg_crc(page: bytes) -> int:
    """Ogg's page checksum: CRC-32, polynomial 0x04C11DB7, no reflection, over the page with its
    checksum field zeroed."""
    crc = 0
    for byte in page:
        crc ^= byte << 24
        for _ in range(8):
            crc = (((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
    return crc


def overcount_ogg(path: Path, extra: int) -> None:
    """Raise the granule position of an Ogg file's last page by ``extra`` samples, checksum fixed:
    the header's frame count (what libsndfile reports) then exceeds what decodes, as an encoder's
    pre-skip and padding make it do in real Ogg files."""
    data = bytearray(path.read_bytes())
    start = data.rfind(b"OggS")
    segments = data[start + 26]
    length = 27 + segments + sum(data[start + 27 : start + 27 + segments])
    struct.pack_into("<q", data, start + 6, struct.unpack_from("<q", data, start + 6)[0] + extra)
    struct.pack_into("<I", data, start + 22, 0)
    struct.pack_into("<I", data, start + 22, ogg_crc(bytes(data[start : start + length])))
    path.write_bytes(bytes(data))


def _ogg_estimate(path: Path) -> None:
    """A Vorbis file whose header counts a few thousand frames more than decode: valid, and kept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, _tone(8.0, 523.0), SR, format="OGG", subtype="VORBIS")
    overcount_ogg(path, 4000)


def _truncated(path: Path) -> None:
    _wav(path, _tone(6.0, 700.0))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _nan(path: Path) -> None:
    y = _tone(6.0, 300.0)
    y[1000:1100] = np.nan
    _wav(path, y, "FLOAT")


def _hours(folder: Path, hours: int) -> None:
    """A WAV of ``hours`` hours, written a minute at a time (the bench process never holds it whole)."""
    folder.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(folder / f"{hours}-hours.wav", "w", SR, 1, subtype="PCM_16") as out:
        for minute in range(60 * hours):
            t = (np.arange(60 * SR) + minute * 60 * SR) / SR
            out.write((0.2 * np.sin(2 * np.pi * (300 + 100 * np.sin(2 * np.pi * t / 17)) * t)).astype(np.float32))


def _symlinks(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "album.wav").mkdir()
    (folder / "loop.wav").symlink_to(folder / "loop.wav")
    (folder / "gone.wav").symlink_to(folder / "deleted.wav")


# fault -> (what makes its files in a label folder, how many files it makes, settings by section)
FAULTS: dict[str, tuple[Callable[[Path], None], int, dict[str, Any]]] = {
    "empty_file": (lambda d: (d.mkdir(parents=True, exist_ok=True), (d / "empty.wav").write_bytes(b"")), 1, {}),
    "not_audio": (lambda d: (d.mkdir(parents=True, exist_ok=True), (d / "text.wav").write_text("not audio " * 50)), 1, {}),
    "truncated_wav": (lambda d: _truncated(d / "half.wav"), 1, {}),
    "non_finite_samples": (lambda d: _nan(d / "nan.wav"), 1, {}),
    "silent": (lambda d: _wav(d / "silent.wav", np.zeros(5 * SR, np.float32)), 1, {}),
    "too_short": (lambda d: _wav(d / "short.wav", _tone(1.0, 440.0)), 1, {}),
    "duplicate": (lambda d: _wav(d / "copy.wav", _tone(4.0, 330.0)), 1, {}),  # the first good file's content
    "ogg_count_estimate": (lambda d: _ogg_estimate(d / "estimate.ogg"), 1, {}),
    "not_a_file_and_symlinks": (_symlinks, 3, {}),
    "beyond_full_scale": (lambda d: _wav(d / "loud.wav", _tone(4.0, 600.0, amp=1e12), "FLOAT"), 1, {}),
    # extracted whole (block_seconds None), 40 minutes take a 700 MB worker to its limit: it dies
    # extracting (twice: quarantined as worker_lost) or writing (extracted again, written by the flow)
    "worker_killed_by_a_long_file": (lambda d: _wav(d / "hour.wav", _tone(40 * 60.0, 500.0)), 1,
                                     {"features": {"block_seconds": None}, "compute": {"workers": 1, "worker_memory_limit": "700MB"}}),
    # in blocks (the default), three hours at the default feature settings fit a 1.5 GiB worker
    "three_hour_file": (lambda d: _hours(d, 3), 1, {"features": {"n_mels": 128, "hpss": True},
                                                    "compute": {"workers": 1, "worker_memory_limit": "1.5GiB"}}),
    # six hours with HPSS (about 150 s here) outlast the shard's limit (1 s per file and a minute)
    # and, alone, 1 s: quarantined as timeout, the workers holding it restarted; the good files are kept
    "file_past_its_time_limit": (lambda d: _hours(d, 6), 1, {"features": {"n_mels": 128, "hpss": True}, "compute": {"workers": 2},
                                                             "orchestration": {"file_timeout_s": 1.0}}),
}
QUICK = ("empty_file", "truncated_wav", "duplicate", "ogg_count_estimate", "not_a_file_and_symlinks", "beyond_full_scale")


def _corpus(root: Path, faults: list[str]) -> dict[str, int]:
    """Good files in ``good/``, each fault's files in ``zz-<fault>/`` (after them: a duplicate's
    copy is the one set aside); returns how many files each fault made."""
    for n in range(GOOD):
        _wav(root / "good" / f"good{n}.wav", _tone(4.0, 330.0 * (1 + n / 4)))
    for fault in faults:
        FAULTS[fault][0](root / f"zz-{fault}")
    return {fault: FAULTS[fault][1] for fault in faults}


def _rows(settings: ChorusSettings, counts: dict[str, int], seconds: float, finished: bool) -> list[dict[str, Any]]:
    state = StateDir(settings.state_dir)
    tracks = read_table(state.tracks) if state.tracks.exists() else pd.DataFrame(columns=["track_id", "uri"])
    quarantine = read_table(state.ingest_quarantine) if state.ingest_quarantine.exists() else pd.DataFrame(columns=["uri"])
    rejected_path = state.features_quarantine(settings.features.config_hash())
    rejected = read_table(rejected_path) if rejected_path.exists() else pd.DataFrame(columns=["uri"])
    stored = load_features(state.features, settings.features, maps=("logmel",)) if finished else None
    extracted = set(stored.segments["track_id"]) if stored is not None else set()
    duplicated = int(stored.segments.duplicated(["track_id", "segment"]).sum()) if stored is not None else 0
    good = tracks[tracks["uri"].astype(str).str.contains("/good/")]
    good_ok = int(good["track_id"].isin(extracted).sum()) == GOOD
    rows = []
    for fault, count in counts.items():
        mine = f"zz-{fault}/"
        out = int(tracks[tracks["uri"].astype(str).str.contains(mine)]["track_id"].isin(extracted).sum())
        quarantined = int(quarantine["uri"].astype(str).str.contains(mine).sum() + rejected["uri"].astype(str).str.contains(mine).sum())
        lost = count - out - quarantined
        rows.append({"fault": fault, "survived": bool(finished and good_ok and lost == 0 and duplicated == 0),
                     "records_in": count, "records_out": out, "quarantined": quarantined, "lost": lost,
                     "duplicated": duplicated, "recover_seconds": round(seconds, 2)})
    return rows


def run_faults(faults: list[str], workdir: Path, log: Callable[[str], None] = print) -> tuple[list[dict[str, Any]], float]:
    """The ingest and features stages over good files and ``faults`` (sharing their feature
    settings), on a local Dask cluster; one row per fault, and the busiest worker's peak resident
    memory (MiB; NaN when the stages did not finish)."""
    root = workdir / "-".join(faults)[:80]
    shutil.rmtree(root, ignore_errors=True)
    counts = _corpus(root / "corpus", faults)
    # the long files are within ingest.max_duration_s here: the features stage is what is tried
    chosen = FAULTS[faults[0]][2]
    settings = load_settings(overrides={"state_dir": str(root / "state"), "ingest": {"manifest": str(root / "corpus"), "max_duration_s": 7 * 3600},
                                        **chosen, "features": {"n_mels": 32, "hpss": False, **chosen.get("features", {})}})
    started = time.perf_counter()
    finished, peak = True, float("nan")
    try:
        ingest_stage(settings)
        shards = plan_shards(load_tracks(settings), settings.features, StateDir(settings.state_dir).features)
        with dask_scheduler(settings.compute) as address, Client(address, set_as_default=False,
                                                                 security=client_security(address)) as client, \
                PeakMemory() as memory:
            results = [extract_shard(shard, settings, client) for shard in shards]
        peak = memory.mark()[1]
        finish_features(settings, results, time.perf_counter() - started)
    except Exception as exc:  # a fault the stages did not survive is a row of the table, not a crash of it
        log(f"{', '.join(faults)}: not survived: {type(exc).__name__}: {exc}")
        finished = False
    rows = _rows(settings, counts, time.perf_counter() - started, finished)
    peak = peak if finished else float("nan")
    log(f"{', '.join(faults)}: peak worker memory {peak:.0f} MiB (limit {settings.compute.worker_memory_limit})")
    return rows, peak


def _postgres_installed() -> bool:
    from chorus_ops.postgres import PostgresError, postgres_bin

    try:
        postgres_bin()
    except PostgresError:
        return False
    return True


def run(quick: bool = False, log: Callable[[str], None] = print, services: bool | None = None,
        processes: bool | None = None) -> dict[str, Any]:
    """Every fault (``quick``: the bad-input kinds without the long files); ``services``: also the
    local services killed mid-run (default: in the full run, when PostgreSQL is installed);
    ``processes``: also chorus's own process killed during labels and train (default: the full run)."""
    faults = QUICK if quick else tuple(FAULTS)
    groups: dict[str, list[str]] = {}  # faults that need the same feature settings run together
    for fault in faults:
        groups.setdefault(repr(sorted((section, sorted(values.items())) for section, values in FAULTS[fault][2].items())),
                          []).append(fault)
    rows: list[dict[str, Any]] = []
    peaks: dict[str, float] = {}  # fault -> the peak resident memory of its run's busiest worker (MiB)
    with tempfile.TemporaryDirectory(prefix="chorus-faults-") as scratch:
        for group in groups.values():
            group_rows, peak = run_faults(group, Path(scratch), log)
            peaks.update({fault: round(peak, 1) for fault in group if peak == peak})  # NaN: not finished
            for row in group_rows:
                log(f"{row['fault']:>30}: {'survived' if row['survived'] else 'NOT SURVIVED'}, in {row['records_in']}, "
                    f"out {row['records_out']}, quarantined {row['quarantined']}, lost {row['lost']}, "
                    f"duplicated {row['duplicated']}, {row['recover_seconds']} s")
                rows.append(row)
    if services if services is not None else (not quick and _postgres_installed()):
        from chorus_bench.service_faults import run as run_service_faults

        rows += run_service_faults(log)
    if processes if processes is not None else not quick:
        from chorus_bench.process_faults import run as run_process_faults

        rows += run_process_faults(quick, log)
    return {"quick": quick, "faults": rows, "survived": sum(r["survived"] for r in rows), "of": len(rows),
            "peak_worker_mib": peaks, "three_hour_peak_worker_mib": peaks.get("three_hour_file")}
