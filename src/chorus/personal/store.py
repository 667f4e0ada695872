"""A personalised model as a folder that loads without unpickling: the whitening and the
global and group heads as safetensors, the listener table as Parquet (one row per listener,
keyed by a keyed digest of the user id), and a JSON description with the table's content hash."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from chorus.errors import UnsafeModelError
from chorus.io import atomic_path, write_json_atomic
from chorus.personal.model import PersonalMoodModel

HEADS_FILE, LISTENERS_FILE, DESCRIPTION_FILE = "heads.safetensors", "listeners.parquet", "personal.json"
FORMAT = 1


def save_personal_model(model: PersonalMoodModel, folder: Path, description: dict[str, Any]) -> str:
    """Writes ``model`` into ``folder``; returns the listener table's SHA-256."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"mean": model.mean, "projection": model.projection, "global": model.global_head,
               **{f"group/{name}": head for name, head in model.group_heads.items()}}
    with atomic_path(folder / HEADS_FILE) as tmp:
        save_file({k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in tensors.items()}, str(tmp))
    table = model.listeners.assign(weights=[np.asarray(w, np.float32).tolist() for w in model.listeners["weights"]])
    with atomic_path(folder / LISTENERS_FILE) as tmp:
        table.to_parquet(tmp, index=False)
    digest = hashlib.sha256((folder / LISTENERS_FILE).read_bytes()).hexdigest()
    write_json_atomic(folder / DESCRIPTION_FILE, {**description, "format": FORMAT, "listeners_sha256": digest,
                                                  "groups": sorted(model.group_heads), "listeners": len(table)})
    return digest


def load_personal_model(folder: Path) -> PersonalMoodModel:
    """The model ``save_personal_model`` wrote; refuses a listener table that is not the one described."""
    described = folder / DESCRIPTION_FILE
    if not described.is_file():
        raise UnsafeModelError(f"{folder}: no {DESCRIPTION_FILE}; not a personalised model chorus stored")
    description = json.loads(described.read_text())
    if description.get("format") != FORMAT:
        raise UnsafeModelError(f"{described}: format {description.get('format')!r}, expected {FORMAT}")
    if hashlib.sha256((folder / LISTENERS_FILE).read_bytes()).hexdigest() != description["listeners_sha256"]:
        raise UnsafeModelError(f"{folder / LISTENERS_FILE}: not the listener table this model was trained with")
    tensors = {k: v.double().numpy() for k, v in load_file(str(folder / HEADS_FILE)).items()}
    groups = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("group/")}
    listeners = pd.read_parquet(folder / LISTENERS_FILE)
    return PersonalMoodModel(tensors["mean"], tensors["projection"], tensors["global"], groups, listeners)


def forget_listener(folder: Path, digest: str) -> bool:
    """Removes a listener's row from a stored model (their head and group membership); True
    when there was one. The description's content hash follows the table."""
    if not (folder / LISTENERS_FILE).exists():
        return False
    table = pd.read_parquet(folder / LISTENERS_FILE)
    kept = table[table["listener"] != digest]
    if len(kept) == len(table):
        return False
    with atomic_path(folder / LISTENERS_FILE) as tmp:
        kept.to_parquet(tmp, index=False)
    description = json.loads((folder / DESCRIPTION_FILE).read_text())
    description.update(listeners_sha256=hashlib.sha256((folder / LISTENERS_FILE).read_bytes()).hexdigest(),
                       listeners=len(kept))
    write_json_atomic(folder / DESCRIPTION_FILE, description)
    return True
