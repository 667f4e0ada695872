"""What every adapter returns: the audio files to ingest, with their labels and splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from chorus.errors import InputError

DEMO_STAMP = "demo.json"  # beside the demo manifest: marks a folder as the demo corpus



@dataclass(frozen=True)
class AudioCandidates:
    """Files to ingest: ``table`` has at least ``uri``; ``root`` bounds local paths."""

    table: pd.DataFrame
    root: Path
    source: str
    manifest_file: Path | None
    # annotation rows the adapter could not use (uri, reason, detail, manifest_row): quarantined
    rejected: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)  # how labels and splits were read


def read_manifest_table(path: Path) -> pd.DataFrame:
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    if path.suffix.lower() in (".csv", ".tsv"):
        return pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str, keep_default_na=False)
    raise InputError(str(path), "manifest must be .csv, .tsv or .parquet")
