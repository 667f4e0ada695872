from __future__ import annotations

import threading
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from chorus import stages
from chorus.compute import client_open
from chorus.config import ChorusSettings
from chorus.features import Shard, plan_shards
from chorus_tasks._policies import IO_RETRIES


@task(name="plan-feature-shards", cache_policy=NO_CACHE)
def plan(settings: ChorusSettings) -> list[Shard]:
    """Shards of the tracks no stored shard of this feature configuration holds."""
    tracks = stages.load_tracks(settings)
    shards = plan_shards(tracks, settings.features, stages.features_root(settings))
    get_run_logger().info("%d shards to extract (%d tracks)", len(shards), sum(len(s.tracks) for s in shards))
    return shards


# One task per shard of files (Prefect per-file tasks cost ~0.3 s each on Dask); the per-file work
# is plain Dask inside. A shard that fails is retried whole; its output is committed by rename.
@task(name="extract-shard", cache_policy=NO_CACHE, **IO_RETRIES,
      task_run_name="extract-{shard.key}")
def extract(shard: Shard, settings: ChorusSettings, scheduler: str, priority: int = 0) -> dict[str, Any]:
    result = stages.extract_shard(shard, settings, dask_client(scheduler), priority=priority)
    logger = get_run_logger()
    if result.get("failed"):
        logger.error("shard %s failed validation and was not written: %s", shard.path.name, result["failed"])
    else:
        logger.info("shard %s: %s", shard.path.name, {k: v for k, v in result.items() if k != "rejected"})
    for problem in result.get("rejected", []):
        logger.warning("quarantined %s: %s (%s)", problem["uri"], problem["reason"], problem["detail"])
    return result


_CLIENTS: dict[str, Any] = {}
_UNREACHABLE: dict[str, BaseException] = {}  # scheduler -> why a client could not connect, until the flow closes it
_CLIENTS_LOCK = threading.Lock()


def dask_client(address: str) -> Any:
    """One client per scheduler for the flow process (shard tasks run in its threads): a client
    costs a connection handshake, and closing one per shard showed in the timings. Once a
    connection has failed, the other shards fail at once instead of each waiting its timeout."""
    from distributed import Client

    with _CLIENTS_LOCK:
        if address in _UNREACHABLE:
            # a new error for this shard, chained to the first (which names the scheduler's failure)
            failed = _UNREACHABLE[address]
            raise OSError(f"{failed}") from failed
        client = _CLIENTS.get(address)
        if client is None or not client_open(client):
            try:
                client = _CLIENTS[address] = Client(address, set_as_default=False)
            except OSError as exc:
                _UNREACHABLE[address] = exc
                raise
        return client


def close_client(address: str) -> None:
    with _CLIENTS_LOCK:
        _UNREACHABLE.pop(address, None)
        client = _CLIENTS.pop(address, None)
    if client is not None:
        client.close()


@task(name="index-features", cache_policy=NO_CACHE)
def finish(settings: ChorusSettings, results: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    return stages.finish_features(settings, results, seconds).as_dict()
