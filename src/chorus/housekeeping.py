"""``chorus gc``: find outputs nothing refers to any more, and remove them when asked.

Referenced: the feature set of the current settings and every feature set a registered model
version was trained on (its ``chorus.feature_config_hash`` tag). Unreferenced: other feature sets,
shards of a referenced set that its index no longer serves, and temporary files a killed write
left behind."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from chorus.config import ChorusSettings
from chorus.io import TEMP_GLOB
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


def find_garbage(settings: ChorusSettings, registered_feature_hashes: set[str]) -> list[Garbage]:
    state = StateDir(settings.state_dir)
    current = settings.features.config_hash()
    keep = {current, *registered_feature_hashes}
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
        if item.path.is_dir():
            shutil.rmtree(item.path, ignore_errors=True)
        else:
            item.path.unlink(missing_ok=True)
        freed += item.bytes
    return freed
