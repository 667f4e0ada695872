"""The features stage's edges: one shard of files extracted (on Dask when a client is given),
validated with GX and renamed into place; then the index of the shards serving the current tracks
and the quarantine of what could not be extracted."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pandas as pd
from distributed import Client, Future
from distributed import TimeoutError as DaskTimeoutError
from distributed.comm import CommClosedError
from distributed.scheduler import KilledWorker

from chorus import progress
from chorus.audio import AudioProblem
from chorus.compute import client_open, local_workers
from chorus.config import ChorusSettings, FeatureSettings
from chorus.errors import ValidationFailedError
from chorus.families import resolve_candidates
from chorus.features import (
    DB_MAX,
    Shard,
    StagedShard,
    commit_shard,
    discard_shard,
    extract_batch_or_problems,
    extract_track_or_problem,
    feature_dir,
    plan_shards,
    problem_record,
    segment_check_params,
    shard_is_current,
    uses_device_batches,
    warm_extractor,
    without_tracks,
    write_index,
    write_temp_shard,
)
from chorus.io import write_parquet
from chorus.limits import shard_seconds
from chorus.pretrained.frontend import musicnn_features
from chorus.stages.context import StageSummary, brief_counts, log, shared_validator
from chorus.stages.inputs import features_root, load_tracks
from chorus.state import StateDir
from chorus.validation import Validator, with_known_tracks

QUARANTINE_COLUMNS = ["track_id", "uri", "sha256", "reason", "detail"]


def extraction_settings(settings: ChorusSettings) -> list[ChorusSettings]:
    """The settings of each feature configuration the selected candidates read: the main one, and
    musicnn's input when a musicnn candidate is selected (each extracts and indexes on its own;
    where the main one is musicnn's input, as in a library run, it is extracted once)."""
    configurations = [settings]
    musicnn = musicnn_features(settings.features)
    if musicnn.config_hash() != settings.features.config_hash() and \
            any(spec.feature_config == "musicnn" for spec in resolve_candidates(list(settings.train.selected))):
        configurations.append(settings.model_copy(update={"features": musicnn}))
    return configurations


def shards_in_flight(settings: ChorusSettings) -> int:
    """How many shard tasks run at once: four per worker keep the workers fed while finished
    shards are checked and committed. Each running shard holds a thread of the flow's process and
    its files' tasks in the scheduler, so all of a catalogue's shards at once would grow that
    process with the catalogue."""
    return 4 * local_workers(settings.compute)


def _extraction_jobs(shard: Shard, settings: ChorusSettings) -> tuple[Callable[..., Any], tuple[list[Any], list[Any]]]:
    """The function the workers run and its argument lists: one file per call, or (the torch
    chain) ``device_batch`` files per Dask task and per device call."""
    ids, uris = shard.tracks["track_id"].tolist(), shard.tracks["uri"].tolist()
    if not uses_device_batches(settings.features):
        return extract_track_or_problem, (ids, uris)
    step = settings.features.device_batch
    return extract_batch_or_problems, ([ids[i : i + step] for i in range(0, len(ids), step)],
                                       [uris[i : i + step] for i in range(0, len(uris), step)])


def progress_name(settings: ChorusSettings) -> str:
    """How progress names this configuration's extraction: ``features``, or ``features (musicnn)``."""
    musicnn = settings.features.config_hash() == musicnn_features(settings.features).config_hash()
    return "features (musicnn)" if musicnn else "features"


def plan_features(settings: ChorusSettings) -> list[Shard]:
    """The shards of the tracks no stored shard of this feature configuration holds; reports the
    stage as started with that many shards to extract."""
    shards = plan_shards(load_tracks(settings), settings.features, features_root(settings))
    progress.started(progress_name(settings), total=len(shards), unit="shards")
    return shards


def extract_shard(shard: Shard, settings: ChorusSettings, client: Client | None = None,
                  validator: Validator | None = None, priority: int = 0) -> dict[str, Any]:
    """Extract one shard's files (through a Dask client when given: one Dask task per file, and
    the Parquet written on a worker), validate it with GX, then rename it into place."""
    result = _extract_shard(shard, settings, client, validator, priority)
    progress.report(progress.ProgressEvent(progress_name(settings), "advanced", unit="shards", step=1))
    return result


def _extract_shard(shard: Shard, settings: ChorusSettings, client: Client | None, validator: Validator | None,
                   priority: int) -> dict[str, Any]:
    if shard_is_current(shard):
        return {"shard": shard.path.name, "skipped": True, "tracks": len(shard.tracks)}
    fs = settings.features
    if client is not None:
        try:
            staged = _extract_on_workers(client, shard, settings, priority)
        except KilledWorker as died:
            # The worker died writing: a long file's extraction can leave its memory near the limit
            # (freed memory is not always returned to the system). The results died with it: the
            # files are extracted again (each alone if a worker dies again) and written here.
            log.warning("%s: the worker writing it died (%s); extracting its files again, writing here", shard.path.name, died)
            staged = _extract_on_workers(client, shard, settings, priority, write_here=True)
    else:
        extract, jobs = _extraction_jobs(shard, settings)
        staged = write_temp_shard(shard, [extract(i, u, fs) for i, u in zip(*jobs, strict=True)], fs)
    extracted = sorted(set(shard.tracks["track_id"]) - {r["track_id"] for r in staged.rejected})
    validator = validator or shared_validator(settings)
    try:
        _validate_shard(staged, extracted, fs, validator)
    except ValidationFailedError as failure:
        problems = failing_tracks(staged.checks, fs)
        if not problems:  # not a track's fault: reported, not written; the next run retries the shard
            discard_shard(staged)
            log.error("%s", failure)
            return {**_shard_result(staged, extracted), "failed": str(failure), "segments": 0, "tracks": 0}
        # the tracks that broke a rule are quarantined with it; the shard commits the rest
        staged = without_tracks(staged, problems, "feature_check", fs)
        extracted = sorted(set(extracted) - set(problems))
        _validate_shard(staged, extracted, fs, validator)
    commit_shard(staged)
    return _shard_result(staged, extracted)


def _extract_on_workers(client: Client, shard: Shard, settings: ChorusSettings, priority: int,
                        write_here: bool = False) -> StagedShard:
    """The shard's files extracted on the workers (its poison files quarantined) and its Parquet
    written on a worker, or here (``write_here``, or when the results were fetched here anyway)."""
    fs = settings.features
    extract, jobs = _extraction_jobs(shard, settings)
    # Shards submitted together would otherwise interleave their files and all finish at the
    # end; by priority, earlier shards finish first and their checks overlap later compute.
    files = client.map(extract, *jobs, [fs] * len(jobs[0]), pure=False, priority=priority)
    deadline = time.monotonic() + shard_seconds(settings, len(shard.tracks))
    results, fetched = _survivors(client, extract, jobs, files, fs, deadline, settings.orchestration.file_timeout_s)
    if fetched or write_here:
        return write_temp_shard(shard, client.gather(results), fs)
    return _result(client, client.submit(write_temp_shard, shard, results, fs, pure=False, priority=priority))


def _shard_result(staged: StagedShard, extracted: list[str]) -> dict[str, Any]:
    return {"shard": staged.shard.path.name, "skipped": False, "tracks": len(extracted), "segments": staged.segments,
            "audio_seconds": round(staged.audio_seconds, 2), "rejected": staged.rejected}


class _Late(Exception):
    """A job not finished by its deadline."""


def _connected(client: Client) -> None:
    """CommClosedError once the client has lost its scheduler (nothing sent to it would finish)."""
    if not client_open(client):
        raise CommClosedError("the Dask client lost its scheduler and closed")


def _result(client: Client, future: Future) -> Any:
    """The future's result, or CommClosedError when the client loses its scheduler meanwhile."""
    while True:
        try:
            return future.result(timeout=1.0)
        except (TimeoutError, DaskTimeoutError):
            _connected(client)


def _within(future: Future, deadline: float) -> BaseException | None:
    """The future's error (None: it finished; ``_Late``: not by ``deadline``)."""
    try:
        # exception() waits through the future's own client (distributed.wait would need a
        # default client, which the flow's per-thread clients are not)
        return future.exception(timeout=max(0.0, deadline - time.monotonic()))
    except (TimeoutError, DaskTimeoutError):
        return _Late()


def _holders(client: Client, futures: list[Future]) -> set[str]:
    """The workers the jobs are assigned to (running, or queued to run)."""
    keys = {future.key for future in futures}
    return {worker for worker, held in client.processing().items() if keys & set(held)}


def _files_of(ids: Any, uris: Any) -> list[tuple[str, str]]:
    return list(zip(*((ids, uris) if isinstance(ids, list) else ([ids], [uris])), strict=True))


def _survivors(client: Client, extract: Callable[..., Any], jobs: tuple[list[Any], list[Any]], files: list[Future],
               fs: FeatureSettings, deadline: float, file_seconds: float) -> tuple[list[Any], bool]:
    """Each job's result (a future left on its worker, or fetched) or problem records, and whether
    results were fetched into this process (before restarting workers). A job whose worker died
    under it, or not done by the shard's ``deadline``, is tried again alone (``file_seconds`` per
    file): a file that kills its worker a second time is quarantined as ``worker_lost``, one late a
    second time as ``timeout``, each with the error, so the shard commits its other tracks."""
    firsts = [_within(future, deadline) for future in files]
    slots: list[Any] = [future if first is None else None for future, first in zip(files, firsts, strict=True)]
    late = [future for future, first in zip(files, firsts, strict=True) if isinstance(first, _Late)]
    # A late job may be stuck on its worker's only thread: those workers restart before any job is
    # tried again, so no retry waits behind it and none is timed against another file's work.
    fetched = bool(late)
    if late:
        slots = _restart(client, late, slots, fs)
    for i, first in enumerate(firsts):
        if first is None:
            continue
        ids, uris = jobs[0][i], jobs[1][i]
        _connected(client)  # a job lost with the scheduler is not a file's fault
        alone = client.submit(extract, ids, uris, fs, pure=False)
        error = _within(alone, time.monotonic() + file_seconds * len(_files_of(ids, uris)))
        if error is None:
            slots[i] = alone
            continue
        if isinstance(error, _Late):
            slots = _restart(client, [alone], slots, fs)
            fetched = True
            reason, detail = "timeout", f"not extracted within orchestration.file_timeout_s ({file_seconds:g} s per file), twice"
        else:
            reason = "worker_lost" if isinstance(error, KilledWorker) else "extraction_error"
            detail = f"{type(error).__name__}: {error}"[:500]
        slots[i] = [problem_record(track_id, uri, AudioProblem(reason, detail)) for track_id, uri in _files_of(ids, uris)]
        log.error("%s: %s (%s)", uris, reason, detail)
    return slots, fetched


def _restart(client: Client, late: list[Future], slots: list[Any], fs: FeatureSettings) -> list[Any]:
    """Dask cannot stop a running task, and a stuck one holds its worker's only thread for every
    job after it: the results so far are fetched (a restart loses what a worker holds), the late
    jobs cancelled and the workers holding them restarted, then warmed, so that a file tried again
    there is timed on its own work, not on the worker's start."""
    workers = _holders(client, late)
    fetched = client.gather(slots)
    client.cancel(late)
    if workers:
        kept = set(client.scheduler_info()["workers"]) - workers
        client.restart_workers(sorted(workers), raise_for_error=False)
        restarted = sorted(set(client.scheduler_info()["workers"]) - kept)  # new addresses
        if restarted:  # only they: a busy worker's loop may wait on its running file
            client.run(warm_extractor, fs, workers=restarted)
    return list(fetched)


def _validate_shard(staged: StagedShard, extracted: list[str], fs: FeatureSettings, validator: Validator) -> None:
    # Data Docs are rebuilt once, when the stage finishes
    validator.validate(with_known_tracks(staged.checks, extracted), "feature_segments", segment_check_params(fs, extracted),
                       update_docs=False)


def failing_tracks(checks: pd.DataFrame, fs: FeatureSettings) -> dict[str, str]:
    """Tracks whose segments break a per-segment rule of the ``feature_segments`` suite (finite
    values, the dB range), each with the rule and how far it was broken."""
    rules = [("finite", ~checks["finite"].astype(bool), "non-finite values"),
             ("min_db", checks["min_db"] < fs.db_floor, f"below db_floor {fs.db_floor}"),
             ("max_db", checks["max_db"] > DB_MAX, f"above {DB_MAX} dB")]
    problems: dict[str, str] = {}
    for column, broken, rule in rules:
        for track_id, rows in checks[broken].groupby("track_id"):
            worst = rows[column].max() if column == "max_db" else rows[column].min()
            problems.setdefault(str(track_id), f"feature_segments: {column} {rule} in {len(rows)} segment(s) "
                                               f"(worst {worst})")
    return problems


def finish_features(settings: ChorusSettings, results: list[dict[str, Any]], seconds: float) -> StageSummary:
    """Index the shards that serve the current tracks; quarantine what could not be extracted."""
    state = StateDir(settings.state_dir)
    config_hash = settings.features.config_hash()
    index = write_index(load_tracks(settings), settings.features, state.features)
    if any(not r["skipped"] for r in results):
        shared_validator(settings).build_docs()
    quarantine = state.features_quarantine(config_hash)
    write_parquet(pd.DataFrame(index["rejected"], columns=QUARANTINE_COLUMNS), quarantine, {"config_hash": config_hash})
    done = [r for r in results if not r["skipped"]]
    failed = [r for r in done if r.get("failed")]
    summary = StageSummary(
        "features",
        skipped=not done,
        outputs={"features": str(feature_dir(state.features, settings.features)), "index": index["path"],
                 "rejected": str(quarantine)},
        counts={"tracks": len(index["tracks"]), "shards": len(index["shards"]), "shards_written": len(done) - len(failed),
                "shards_failed_validation": len(failed), "segments_written": sum(r.get("segments", 0) for r in done),
                "audio_seconds_extracted": round(sum(r.get("audio_seconds", 0.0) for r in done), 1),
                "rejected": len(index["rejected"]), "rejected_this_run": sum(len(r.get("rejected", [])) for r in done)},
        seconds=seconds,
    )
    progress.finished(progress_name(settings), brief_counts(summary.counts), seconds, summary.skipped)
    return summary


