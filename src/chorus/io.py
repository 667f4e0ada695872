"""Reading and writing at the edges: atomic Parquet with chorus metadata, content hashes."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

METADATA_KEY = b"chorus"
SCHEMA_VERSION = 1


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def track_id_for(sha256_hex: str) -> str:
    """A track's id is its content hash (first 16 hex digits of SHA-256: 64 bits)."""
    return sha256_hex[:16]


TEMP_GLOB = ".*.tmp"  # what temp_path_beside creates: hidden, so no reader's glob picks it up


def temp_path_beside(path: str | Path) -> Path:
    """A new empty temporary file beside ``path``: same filesystem, so renaming it into place is
    atomic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def fsync_file(path: str | Path) -> None:
    """Flush a written file's data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (a rename into it) to the disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_replace(tmp_path: str | Path, path: str | Path) -> None:
    """Rename a written temporary file into place so that a crash leaves the old file or the new
    one, whole: the data is flushed before the rename, the folder's entry after it."""
    fsync_file(tmp_path)
    os.replace(tmp_path, path)
    fsync_dir(Path(path).parent)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place, durably, only if the block
    succeeds."""
    tmp_path = temp_path_beside(path)
    try:
        yield tmp_path
        durable_replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def _json_value(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # a numpy scalar
        return value.item()
    if hasattr(value, "tolist"):  # a numpy array
        return value.tolist()
    return str(value)


def json_plain(data: Any) -> Any:
    """``data`` as plain JSON values (numpy scalars and arrays as numbers and lists, anything else
    JSON does not hold as its str): what a JSON result serializer and readers can take."""
    return json.loads(json.dumps(data, default=_json_value))


def write_json_atomic(path: str | Path, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line, flushed and fsynced: an audit row must survive a crash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(record, default=str) + "\n")
        out.flush()
        os.fsync(out.fileno())


def write_parquet(
    table: pa.Table | pd.DataFrame,
    path: str | Path,
    meta: dict[str, Any] | None = None,
    **options: Any,
) -> Path:
    """Write a Parquet file atomically (zstd), with ``meta`` stored as JSON in its metadata."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    table = with_meta(table, meta)
    options.setdefault("compression", "zstd")
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **options)
    return Path(path)


def with_meta(table: pa.Table, meta: dict[str, Any] | None) -> pa.Table:
    """``table`` with ``meta`` (and the schema version) as the chorus entry of its schema metadata."""
    existing = dict(table.schema.metadata or {})
    existing[METADATA_KEY] = json.dumps(
        {"schema_version": SCHEMA_VERSION, **(meta or {})}, sort_keys=True, default=str
    ).encode()
    return table.replace_schema_metadata(existing)


def read_meta(path: str | Path) -> dict[str, Any] | None:
    """The chorus metadata of a Parquet file, or None if the file is missing or unreadable."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowInvalid):
        return None
    raw = (schema.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def output_is_current(path: str | Path, key: str) -> bool:
    """True when ``path`` exists and was written for ``key``: the data on disk decides."""
    meta = read_meta(path)
    return meta is not None and meta.get("key") == key


def read_table(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    return pq.read_table(path, columns=columns).to_pandas()
