"""``chorus gc``: find outputs nothing refers to any more, and remove them when asked.

Referenced: the feature set of the current settings and every feature set a registered model
version was trained on (its ``chorus.feature_config_hash`` tag). Unreferenced: other feature sets,
shards of a referenced set that its index no longer serves, and temporary files a killed write
left behind (in feature sets, the remote cache and the search indexes), the scratch of a block
extraction whose worker was killed (in this machine's temporary folder), and search-index versions
no link names any more."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from chorus.config import ChorusSettings
from chorus.features.blocks import orphaned_scratch
from chorus.io import TEMP_GLOB
from chorus.search.index import index_versions, interrupted_saves
from chorus.state import StateDir


@dataclass(frozen=True)
class Garbage:
    path: Path
    bytes: int
    reason: str


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def find_garbage(settings: ChorusSettings, registered_feature_hashes: set[str],
                 scratch_root: Path | None = None) -> list[Garbage]:
    """Everything unreferenced; ``scratch_root`` is where block extractions decode (the system's
    temporary folder unless given)."""
    state = StateDir(settings.state_dir)
    found = [*_feature_garbage(state, {settings.features.config_hash(), *registered_feature_hashes}),
             *_search_garbage(state)]
    if state.remote_cache.exists():
        found += [Garbage(t, _size(t), "temporary file of an interrupted download") for t in sorted(state.remote_cache.glob(TEMP_GLOB))]
    found += [Garbage(s, _size(s), "samples decoded by a block extraction whose process is gone") for s in orphaned_scratch(scratch_root)]
    return found


def _search_garbage(state: StateDir) -> list[Garbage]:
    """Index versions that neither the current link nor the one before names (a version stays one
    swap for readers that resolved it), links and folders of interrupted swaps."""
    if not state.search.exists():
        return []
    found = []
    for link in sorted(p for p in state.search.iterdir() if p.is_symlink() and not p.name.startswith(".")):
        versions = index_versions(link)
        current = link.resolve()
        keep = {current, *[v for v in versions if v != current][-1:]}
        found += [Garbage(v, _size(v), "search index version no link names") for v in versions if v not in keep]
        found += [Garbage(v, _size(v), "half-written search index version of a killed save") for v in interrupted_saves(link)]
    for left in sorted(state.search.glob(".*")):
        if left.name.split(".")[-1].startswith(("link-", "building-", "retired-")):
            found.append(Garbage(left, 0 if left.is_symlink() else _size(left), "left by an interrupted index swap"))
    return found


def _feature_garbage(state: StateDir, keep: set[str]) -> list[Garbage]:
    found: list[Garbage] = []
    if not state.features.exists():
        return found
    for folder in sorted(p for p in state.features.iterdir() if p.is_dir()):
        if folder.name not in keep:
            found.append(Garbage(folder, _size(folder), "feature set referenced by no setting or registered model"))
            continue
        index_path = folder / "index.json"
        served = set(json.loads(index_path.read_text())["shards"]) if index_path.exists() else None
        for shard in sorted(folder.glob("shard-*.parquet")):
            if served is not None and shard.name not in served:
                found.append(Garbage(shard, _size(shard), "shard the feature index no longer serves"))
        for temp in sorted(folder.glob(TEMP_GLOB)):
            found.append(Garbage(temp, _size(temp), "temporary file of an interrupted write"))
    return found


def remove(garbage: list[Garbage]) -> int:
    freed = 0
    for item in garbage:
        if item.path.is_dir() and not item.path.is_symlink():
            shutil.rmtree(item.path, ignore_errors=True)
        else:
            item.path.unlink(missing_ok=True)
        freed += item.bytes
    return freed
