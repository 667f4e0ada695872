"""Ingest: probe and decode every candidate file, keep the good ones, quarantine the rest.

Nothing disappears silently: each rejected file lands in the quarantine table with its reason
(outside_root, scheme_not_allowed, missing, empty, not_audio, unreadable, truncated, non_finite,
silent, too_short, too_long, too_large (a remote object over ingest.max_remote_bytes), duplicate) and a detail.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from chorus.audio import AudioInfo, AudioProblem, decode, probe
from chorus.config import IngestSettings, stable_hash
from chorus.datasets.candidates import AudioCandidates
from chorus.errors import InputError
from chorus.io import atomic_path, file_sha256, track_id_for, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

# frames_short: how many frames decoding fell short of the header's estimate (compressed formats)
TRACK_COLUMNS = ["track_id", "uri", "duration_s", "sample_rate", "channels", "codec", "source", "split", "sha256",
                 "frames_short"]
QUARANTINE_COLUMNS = ["uri", "reason", "detail", "source", "manifest_row", "sha256"]
RESERVED = {"uri", "split", "sha256", "manifest_row", "work"}


@dataclass(frozen=True)
class IngestResult:
    tracks: pd.DataFrame
    quarantine: pd.DataFrame

    def summary(self) -> dict[str, Any]:
        return {
            "tracks": len(self.tracks),
            "quarantined": len(self.quarantine),
            "reasons": self.quarantine["reason"].value_counts().sort_index().to_dict(),
        }


def resolve_uri(uri: str, root: Path, allowed_schemes: list[str]) -> Path | str:
    """A local path inside ``root`` (as a Path) or an allowed remote URI (as a str).

    Raises AudioProblem(outside_root | scheme_not_allowed)."""
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower() if len(parsed.scheme) > 1 else ""  # "C:" is a drive, not a scheme
    if scheme and scheme != "file":
        if scheme not in allowed_schemes:
            raise AudioProblem("scheme_not_allowed", f"scheme '{scheme}' is not in ingest.allowed_schemes {allowed_schemes}")
        return uri
    local = Path(parsed.path if scheme == "file" else uri).expanduser()
    given = local if local.is_absolute() else root / local
    try:
        path = given.resolve()
    except (RuntimeError, OSError) as exc:  # Python 3.11 raises RuntimeError for a loop
        raise AudioProblem("symlink_loop", str(exc)) from None
    if given.is_symlink() and not path.exists():
        raise AudioProblem("dangling_symlink", f"links to {os.readlink(given)}, which does not exist")
    if not path.is_relative_to(root):
        raise AudioProblem("outside_root", f"resolves to {path}, outside the manifest root {root}")
    if path.exists() and not path.is_file():
        raise AudioProblem("not_a_file", "a directory" if path.is_dir() else "not a regular file")
    return path


REMOTE_CHUNK = 1 << 20


def fetch_remote(uri: str, cache_dir: Path, max_bytes: int) -> Path:
    """Copy an allowed remote object (s3://, gs://, ...) into the state's cache via fsspec,
    streamed a MiB at a time; an object over ``max_bytes`` is refused (AudioProblem too_large)
    without being held in memory or kept on disk."""
    import fsspec

    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / (hashlib.sha256(uri.encode()).hexdigest()[:24] + Path(urlparse(uri).path).suffix)
    if not target.exists():  # written whole or not at all: a cached copy is trusted as it is
        with fsspec.open(uri, "rb") as src, atomic_path(target) as tmp, open(tmp, "wb") as out:
            copied = 0
            while chunk := src.read(REMOTE_CHUNK):
                copied += len(chunk)
                if copied > max_bytes:
                    raise AudioProblem("too_large", f"over ingest.max_remote_bytes={max_bytes}")
                out.write(chunk)
    return target


def probe_within_limits(path: Path, settings: IngestSettings) -> AudioInfo:
    """The header of one local file, within ingest's duration limits: what every file chorus
    decodes (ingested, tagged or searched with) must pass. Raises AudioProblem naming the rule."""
    if not path.is_file():
        raise AudioProblem("missing", "no such file")
    info = probe(path)
    if info.duration_s < settings.min_duration_s:
        raise AudioProblem("too_short", f"{info.duration_s:.2f} s < ingest.min_duration_s={settings.min_duration_s}")
    if info.duration_s > settings.max_duration_s:
        raise AudioProblem("too_long", f"{info.duration_s:.0f} s > ingest.max_duration_s={settings.max_duration_s}")
    return info


def inspect_file(path: Path, settings: IngestSettings) -> dict[str, Any]:
    """Probe, hash and decode one local file. Raises AudioProblem naming the rule it broke."""
    info = probe_within_limits(path, settings)
    digest = file_sha256(path)
    data, _ = decode(path)
    short = max(info.frames - data.shape[0], 0)
    if short > info.frame_tolerance():
        estimate = "" if not info.frame_tolerance() else \
            f"; {info.container}'s count is an estimate, {info.frame_tolerance()} frames short is tolerated"
        raise AudioProblem("truncated", f"decoded {data.shape[0]} of {info.frames} frames{estimate}")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioProblem("non_finite", f"{bad} NaN/inf samples")
    peak = float(np.abs(data).max()) if data.size else 0.0
    peak_db = 20 * np.log10(peak) if peak > 0 else -np.inf
    if peak_db < settings.silence_dbfs:
        raise AudioProblem("silent", f"peak {peak_db:.1f} dBFS < ingest.silence_dbfs={settings.silence_dbfs}")
    return {
        "duration_s": info.duration_s,
        "sample_rate": info.sample_rate,
        "channels": info.channels,
        "codec": info.codec,
        "frames_short": short,
        "sha256": digest,
    }


def hash_split(track_id: str, fractions: tuple[float, float, float], seed: int) -> str:
    """A stable split from the content hash: adding tracks never moves existing ones."""
    u = int(hashlib.sha256(f"{seed}:{track_id}".encode()).hexdigest()[:8], 16) / 2**32
    if u < fractions[0]:
        return "train"
    return "valid" if u < fractions[0] + fractions[1] else "test"


def stratified_hash_split(track_ids: list[str], labels: list[str], fractions: tuple[float, float, float],
                          seed: int) -> list[str]:
    """Splits stratified by label: within each label, tracks in the order of their content hash
    fill train, then valid, then test by ``fractions``; a label with three tracks or more has at
    least one in valid and one in test. A track can move only when its label gains tracks."""
    order = {t: hashlib.sha256(f"{seed}:{t}".encode()).hexdigest() for t in track_ids}
    split: dict[str, str] = {}
    for label in sorted(set(labels)):
        members = sorted((t for t, lab in zip(track_ids, labels, strict=True) if lab == label), key=order.__getitem__)
        n = len(members)
        n_valid = max(1, round(n * fractions[1])) if n >= 3 else round(n * fractions[1])
        n_train = round(n * fractions[0])
        if n >= 3 and n - n_train - n_valid < 1:
            n_train = n - n_valid - 1
        for i, track in enumerate(members):
            split[track] = "train" if i < n_train else "valid" if i < n_train + n_valid else "test"
    return [split[t] for t in track_ids]


def _fill_splits(tracks: pd.DataFrame, label_columns: list[str], settings: IngestSettings) -> pd.DataFrame:
    """Tracks the source gave no split: stratified by the label where the corpus has one label
    column (a folder per label, a labelled manifest), else from the content hash alone."""
    missing = tracks["split"] == ""
    if not missing.any():
        return tracks
    ids = tracks.loc[missing, "track_id"].tolist()
    if len(label_columns) == 1:
        labels = tracks.loc[missing, label_columns[0]].fillna("").astype(str).tolist()
        tracks.loc[missing, "split"] = stratified_hash_split(ids, labels, settings.split, settings.split_seed)
    else:
        tracks.loc[missing, "split"] = [hash_split(t, settings.split, settings.split_seed) for t in ids]
    return tracks


def _probe_one(row: pd.Series, candidates: AudioCandidates, settings: IngestSettings,
               cache_dir: Path | None) -> dict[str, Any]:
    """One candidate row: resolved (remote files fetched), decoded and inspected, or its problem."""
    uri = str(row["uri"])
    base = {"uri": uri, "source": candidates.source, "manifest_row": row.get("manifest_row")}
    try:
        target = resolve_uri(uri, candidates.root, settings.allowed_schemes)
        if isinstance(target, str):
            target = fetch_remote(target, cache_dir or candidates.root / ".remote-cache", settings.max_remote_bytes)
        else:
            base["uri"] = str(target)
        facts = inspect_file(target, settings)
    except AudioProblem as problem:
        return {**base, "reason": problem.reason, "detail": problem.detail}
    except OSError as exc:
        return {**base, "reason": "unreadable", "detail": str(exc)}
    return {**base, **facts}


def _without_duplicates(good: list[dict[str, Any]], bad: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first file (by uri) of each content; later copies go to ``bad`` as ``duplicate``."""
    first_seen: dict[str, str] = {}
    kept = []
    for record in sorted(good, key=lambda r: r["uri"]):
        if record["sha256"] in first_seen:
            bad.append({**record, "reason": "duplicate", "detail": f"same content as {first_seen[record['sha256']]}"})
            continue
        first_seen[record["sha256"]] = record["uri"]
        kept.append(record)
    return kept


def _track_row(record: dict[str, Any], source_row: pd.Series, label_columns: list[str],
               settings: IngestSettings) -> dict[str, Any]:
    track_id = track_id_for(record["sha256"])
    split = str(source_row.get("split") or "")  # empty: assigned by _fill_splits
    row = {"track_id": track_id, "uri": record["uri"], "duration_s": float(record["duration_s"]),
           "sample_rate": int(record["sample_rate"]), "channels": int(record["channels"]), "codec": record["codec"],
           "source": record["source"], "split": split, "sha256": record["sha256"],
           "frames_short": int(record["frames_short"])}
    for column in label_columns:
        value = source_row[column]
        row[column] = None if pd.isna(value) or value == "" else str(value)
    return row


def ingest(
    candidates: AudioCandidates,
    settings: IngestSettings,
    cache_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> IngestResult:
    """Turn candidate rows into the tracks table and the quarantine table."""
    table = candidates.table.reset_index(drop=True)
    label_columns = [c for c in table.columns if c not in RESERVED]

    def one(i: int) -> dict[str, Any]:
        record = _probe_one(table.iloc[i], candidates, settings, cache_dir)
        return record if "reason" in record else {**record, "_row": i}

    results: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=settings.workers) as pool:
        for done, record in enumerate(pool.map(one, range(len(table))), start=1):
            results.append(record)
            if progress:
                progress(done, len(table))
    bad = [r for r in results if "reason" in r]
    kept = _without_duplicates([r for r in results if "reason" not in r], bad)
    rows = [_track_row(record, table.iloc[record["_row"]], label_columns, settings) for record in kept]
    tracks = _fill_splits(pd.DataFrame(rows, columns=TRACK_COLUMNS + label_columns), label_columns, settings)
    if candidates.rejected is not None:  # annotation rows the adapter could not use
        bad += [{**r, "source": candidates.source} for r in candidates.rejected.to_dict("records")]
    quarantine = pd.DataFrame(
        [{k: r.get(k) for k in QUARANTINE_COLUMNS} for r in sorted(bad, key=lambda r: str(r["uri"]))],
        columns=QUARANTINE_COLUMNS,
    )
    quarantine["manifest_row"] = pd.array(quarantine["manifest_row"].map(lambda v: None if v is None or pd.isna(v) else int(v)),
                                          dtype="Int64")
    return IngestResult(tracks, quarantine)


def inputs_fingerprint(candidates: AudioCandidates, settings: IngestSettings) -> str:
    """Cheap change detection: settings, the candidate rows, and each local file's size and mtime."""
    stats: list[tuple[Any, ...]] = []
    for uri in candidates.table["uri"].astype(str):
        try:
            target = resolve_uri(uri, candidates.root, settings.allowed_schemes)
            st = Path(target).stat() if isinstance(target, Path) else None
            stats.append((uri, st.st_size, st.st_mtime_ns) if st else (uri,))
        except (AudioProblem, OSError):
            stats.append((uri, "-"))
    tables = [candidates.table] + ([candidates.rejected] if candidates.rejected is not None else [])
    table_hash = hashlib.sha256(b"".join(pd.util.hash_pandas_object(t.astype(str), index=False).values.tobytes()
                                         for t in tables)).hexdigest()
    return stable_hash({"settings": settings.config_hash(), "table": table_hash, "files": stats, "root": str(candidates.root)})


SOCIAL_TABLES = ("users", "follows", "playlists", "playlist_tracks")


def read_social(folder: Path) -> dict[str, pd.DataFrame]:
    """The four social tables from CSV or Parquet; playlist tags become lists of strings."""
    tables = {}
    for name in SOCIAL_TABLES:
        parquet, csv = folder / f"{name}.parquet", folder / f"{name}.csv"
        if parquet.exists():
            df = pd.read_parquet(parquet)
        elif csv.exists():
            df = pd.read_csv(csv, dtype=str, keep_default_na=False, na_values=[""])
        else:
            raise InputError(str(folder), f"social table '{name}' missing (expected {name}.csv or {name}.parquet)")
        if name == "playlists" and "tags" in df.columns:
            df["tags"] = df["tags"].map(_as_tag_list)
        tables[name] = df
    return tables


def _as_tag_list(value: Any) -> list[str]:
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v) for v in value]
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [t for t in str(value).split(";") if t.strip()]


def social_fingerprint(folder: Path) -> str:
    files = sorted(p for p in folder.iterdir() if p.stem in SOCIAL_TABLES and p.suffix in (".csv", ".parquet"))
    return stable_hash({p.name: file_sha256(p) for p in files})


# --- users who leave ----------------------------------------------------------------------
# The ids of users who asked to be forgotten are kept only as keyed digests (HMAC-SHA-256 with a
# random key of the state directory's, in a 0600 file), so that a re-ingest of the source tables
# drops them again, and a copy of the digests alone does not tell whose they are, however
# guessable the ids. A list written before the key existed holds plain SHA-256 digests; they
# still match.

FORGOTTEN_SCHEME = "hmac-sha256"
RETIRED_KEYS = "forgotten.retired-keys.json"


@dataclass(frozen=True)
class ForgottenUsers:
    """Digests of forgotten users' ids: keyed ones, the plain SHA-256 ones of an older list, and
    those a re-keying could not carry over (no id of the source matched them), each with the key
    it was made under."""

    key: bytes
    digests: tuple[str, ...] = ()
    unsalted: tuple[str, ...] = ()
    retired: tuple[tuple[str, str], ...] = ()  # (key hex, digest)

    def digest(self, user_id: str) -> str:
        return hmac.new(self.key, str(user_id).encode(), hashlib.sha256).hexdigest()

    def covers(self, user_id: str) -> bool:
        uid = str(user_id).encode()
        return self.digest(user_id) in self.digests or \
            (bool(self.unsalted) and hashlib.sha256(uid).hexdigest() in self.unsalted) or \
            any(hmac.new(bytes.fromhex(key), uid, hashlib.sha256).hexdigest() == digest for key, digest in self.retired)

    def listed(self) -> list[str]:
        """Every digest, for keys of the tables they filter."""
        return sorted([*self.digests, *self.unsalted, *(digest for _, digest in self.retired)])


def forgotten_users(social_dir: Path, make_key: bool = False) -> ForgottenUsers:
    """The forgotten users' digests and the key they were made with; ``make_key``: a new random
    key where none exists yet (no keyed digest exists without one)."""
    key_file, path = social_dir / "forgotten.key", social_dir / "forgotten.json"
    if make_key and not key_file.exists():
        write_text_atomic(key_file, secrets.token_hex(32))  # 0600, like every atomic write
    key = bytes.fromhex(key_file.read_text().strip()) if key_file.exists() else b""
    recorded = json.loads(path.read_text()) if path.exists() else {}
    if isinstance(recorded, list):  # written before the key: plain SHA-256 digests
        return ForgottenUsers(key, (), tuple(sorted(recorded)))
    keys_file = social_dir / RETIRED_KEYS
    # a list written before the retired keys had their own file held them beside the digests
    retired = json.loads(keys_file.read_text()) if keys_file.exists() else recorded.get("retired", [])
    return ForgottenUsers(key, tuple(sorted(recorded.get("digests", []))), tuple(sorted(recorded.get("unsalted_sha256", []))),
                          tuple(sorted((r["key"], r["digest"]) for r in retired)))


def _write_forgotten(social_dir: Path, forgotten: ForgottenUsers) -> None:
    """The digests to ``forgotten.json``; the retired keys, each with the digest made under it, to
    ``forgotten.retired-keys.json`` (0600, like the key file): a copy of the list alone does not
    hold a key that opens any of its digests."""
    write_json_atomic(social_dir / RETIRED_KEYS, [{"key": key, "digest": digest} for key, digest in forgotten.retired])
    write_json_atomic(social_dir / "forgotten.json", {
        "scheme": FORGOTTEN_SCHEME, "digests": list(forgotten.digests), "unsalted_sha256": list(forgotten.unsalted),
        "retired_digests": sorted(digest for _, digest in forgotten.retired)})


def social_key(social_dir: Path, digests: list[str]) -> str:
    """Key of the copied social tables: the source's content and who was forgotten since."""
    return stable_hash({"source": social_fingerprint(social_dir), "forgotten": digests})


def remember_forgotten(social_dir: Path, user_id: str) -> ForgottenUsers:
    known = forgotten_users(social_dir, make_key=True)
    forgotten = ForgottenUsers(known.key, tuple(sorted({*known.digests, known.digest(user_id)})), known.unsalted,
                               known.retired)
    _write_forgotten(social_dir, forgotten)
    return forgotten


def social_user_ids(tables: dict[str, pd.DataFrame]) -> set[str]:
    """Every user id the social tables name (users, either side of a follow, playlist owners)."""
    columns = [("users", "user_id"), ("follows", "follower"), ("follows", "followee"), ("playlists", "owner")]
    return {str(v) for table, column in columns if column in tables.get(table, pd.DataFrame()).columns
            for v in tables[table][column].dropna()}


def rekey_forgotten(social_dir: Path, source_ids: set[str]) -> tuple[ForgottenUsers, dict[str, int]]:
    """A new key for the forgotten users' digests: each digest (keyed or plain) whose user is
    among ``source_ids`` (the source's social tables) is made again under it; one that no id
    matches cannot be (only its id could) and stays listed under its old key, so nobody forgotten
    comes back. Returns the new list and counts (rekeyed, retired)."""
    old = forgotten_users(social_dir)
    matched = sorted(uid for uid in source_ids if old.covers(uid))
    key = secrets.token_bytes(32)
    fresh = ForgottenUsers(key)
    digests = tuple(sorted({fresh.digest(uid) for uid in matched}))
    found = {old.digest(uid) for uid in matched} | {hashlib.sha256(uid.encode()).hexdigest() for uid in matched}
    still = {(old.key.hex(), d) for d in old.digests if d not in found}
    still |= {("", d) for d in old.unsalted if d not in found}
    unmatched_retired = {(k, d) for k, d in old.retired if not any(
        hmac.new(bytes.fromhex(k), uid.encode(), hashlib.sha256).hexdigest() == d for uid in matched)}
    retired = tuple(sorted(still | unmatched_retired))
    rekeyed = ForgottenUsers(key, digests, tuple(d for k, d in retired if not k), tuple(r for r in retired if r[0]))
    # the list covers everyone under either key until the new key is in place (a crash between the
    # writes forgets nobody)
    both = {(old.key.hex(), d) for d in old.digests} | set(old.retired) | set(rekeyed.retired)
    _write_forgotten(social_dir, ForgottenUsers(key, digests, old.unsalted, tuple(sorted(both))))
    write_text_atomic(social_dir / "forgotten.key", key.hex())  # 0600
    _write_forgotten(social_dir, rekeyed)
    return rekeyed, {"rekeyed": len(digests), "retired": len(retired)}


def drop_forgotten(tables: dict[str, pd.DataFrame], forgotten: ForgottenUsers) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """Remove every social row of the forgotten users: their user row, follows either way, their
    playlists and those playlists' tracks."""
    if not forgotten.listed():
        return tables, {}

    def is_gone(column: pd.Series) -> pd.Series:
        return column.astype(str).map(forgotten.covers).astype(bool)

    users, follows = tables["users"], tables["follows"]
    playlists, members = tables["playlists"], tables["playlist_tracks"]
    owned = is_gone(playlists["owner"])
    dropped_playlists = set(playlists.loc[owned, "playlist_id"].astype(str))
    out = {
        "users": users[~is_gone(users["user_id"])],
        "follows": follows[~(is_gone(follows["follower"]) | is_gone(follows["followee"]))],
        "playlists": playlists[~owned],
        "playlist_tracks": members[~members["playlist_id"].astype(str).isin(dropped_playlists)],
    }
    counts = {name: len(tables[name]) - len(out[name]) for name in out}
    return {name: frame.reset_index(drop=True) for name, frame in out.items()}, counts
