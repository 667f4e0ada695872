"""The embedded demo corpus: rendered music21 excerpts with a planted mood, and a simulated crowd.

Deterministic from a seed: the same settings give the same manifest and the same content hashes
(the manifest records each file's SHA-256 so a render on another machine can be checked).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf
import yaml

from chorus import MOODS
from chorus.config import DemoSettings
from chorus.datasets import render
from chorus.datasets.candidates import DEMO_STAMP
from chorus.datasets.render import Renderer, Work, default_soundfont, list_works
from chorus.datasets.render_cache import RenderCache, RenderJob, default_render_cache
from chorus.io import (
    atomic_path,
    file_sha256,
    track_id_for,
    write_json_atomic,
    write_text_atomic,
)

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.csv"
SOCIAL_DIRNAME = "social"
OFF_VOCABULARY = ("rock", "regional", "vibes", "workout", "2000s", "road trip", "study")
AGE_BANDS = ("18-24", "25-34", "35-49", "50+")


@dataclass(frozen=True)
class DemoCorpus:
    root: Path
    manifest: Path
    social_dir: Path
    tracks: int
    skipped_works: int
    key: str


def demo_key(settings: DemoSettings) -> str:
    return settings.config_hash()


def seed_for(settings: DemoSettings, *parts: str) -> int:
    """A seed for one random stream of a corpus made from ``settings`` (named by ``parts``)."""
    blob = "/".join([str(settings.seed), *parts]).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little")


# One renderer per worker process; it makes a fresh synthesizer per clip (determinism).
_RENDERER: Renderer | None = None


def _init_worker(soundfont: str, sample_rate: int) -> None:
    global _RENDERER
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _RENDERER = Renderer(Path(soundfont), sample_rate)


def _render_work(jobs: list[RenderJob]) -> list[tuple[str, str | None]]:
    """Render renderings of one work (same work and measures): its score is parsed and turned
    into MIDI once, the costly part. Returns (out, error or None) per job."""
    assert _RENDERER is not None
    try:
        midi = _RENDERER.midi_from_work(jobs[0].work, jobs[0].measures)
    except Exception as exc:  # music21 fails on some corpus files: skip and record
        return [(job.out, f"{type(exc).__name__}: {exc}"[:300]) for job in jobs]
    return [(job.out, _render_one(midi, job)) for job in jobs]


def _render_one(midi: bytes, job: RenderJob) -> str | None:
    """Render one clip of ``midi`` to ``job.out`` (FLAC); the error, or None."""
    assert _RENDERER is not None
    try:
        audio = _RENDERER.render(midi, job.mood, job.seconds, job.program)
        if audio.size < _RENDERER.sample_rate * min(4.0, job.seconds):
            return f"excerpt too short ({audio.size / _RENDERER.sample_rate:.1f} s)"
        peak = float(np.abs(audio).max())
        if peak > 0.99:  # keep relative loudness (a mood cue) but never clip
            audio = audio * (0.99 / peak)
        with atomic_path(job.out) as tmp:
            sf.write(str(tmp), audio, _RENDERER.sample_rate, format="FLAC", subtype="PCM_16")
        return None
    except Exception as exc:  # FluidSynth fails on some MIDI: skip and record
        return f"{type(exc).__name__}: {exc}"[:300]


def _by_work(jobs: list[RenderJob]) -> list[list[RenderJob]]:
    """Runs of consecutive jobs that render the same work and measures."""
    groups: list[list[RenderJob]] = []
    for job in jobs:
        if groups and (groups[-1][0].work, groups[-1][0].measures) == (job.work, job.measures):
            groups[-1].append(job)
        else:
            groups.append([job])
    return groups


def _pick_works(settings: DemoSettings, per_style: int) -> list[tuple[Work, str]]:
    """Candidate works per style (with spares for failures) and each one's planted mood."""
    picks: list[tuple[Work, str]] = []
    for style in settings.styles:
        works = list_works(style)
        if not works:
            raise ValueError(f"demo.styles: music21 bundles no works for style '{style}'")
        rng = np.random.default_rng(seed_for(settings, "works", style))
        order = rng.permutation(len(works))[: int(per_style * 1.3) + 2]
        moods = rng.integers(0, len(MOODS), size=len(order))
        picks.extend((works[i], MOODS[m]) for i, m in zip(order, moods, strict=True))
    return picks


def _manifest_rows(picks: list[tuple[Work, str]], jobs: list[RenderJob], rendered: dict[str, list[RenderJob]],
                   root: Path) -> list[dict[str, str]]:
    """The manifest's rows: each style's rendered tracks, in pick order."""
    done = {job.out for style_jobs in rendered.values() for job in style_jobs}
    return [{"uri": str(Path(job.out).relative_to(root)), "style": work.style, "mood": mood, "work": work.label,
             "sha256": file_sha256(job.out)}
            for (work, mood), job in zip(picks, jobs, strict=True) if job.out in done]


def generate_demo(
    settings: DemoSettings,
    root: Path,
    progress: Callable[[int, int], None] | None = None,
) -> DemoCorpus:
    """Render the demo corpus under ``root`` and simulate its crowd. Idempotent: a corpus already
    generated with the same settings (same key in ``root/demo.json``) is reused as it is."""
    root = Path(root)
    key = demo_key(settings)
    stamp = root / DEMO_STAMP
    manifest_path = root / MANIFEST_NAME
    social_dir = root / SOCIAL_DIRNAME
    info = reusable_stamp(stamp, key)
    if info is not None:
        return DemoCorpus(root, manifest_path, social_dir, info["tracks"], info["skipped_works"], key)

    per_style = max(2, int(round(settings.tracks_per_style * settings.scale)))
    picks = _pick_works(settings, per_style)
    jobs = [RenderJob(work, mood, str(root / "audio" / work.style / f"{work.style}-{n:05d}.flac"),
                      settings.clip_seconds, settings.measures)
            for n, (work, mood) in enumerate(picks)]
    soundfont = settings.soundfont or default_soundfont()
    by_style: dict[str, list[RenderJob]] = {style: [] for style in settings.styles}
    for job in jobs:
        by_style[job.work.style].append(job)
    rendered, skipped = render_in_rounds(by_style, per_style, soundfont, settings, progress)
    manifest = pd.DataFrame(_manifest_rows(picks, jobs, rendered, root))
    manifest["split"] = _stratified_split(manifest, settings)
    social = simulate_crowd(
        pd.DataFrame({"track_id": [track_id_for(d) for d in manifest["sha256"]], "mood": manifest["mood"]}),
        settings,
    )
    social_dir.mkdir(parents=True, exist_ok=True)
    for name, table in social.items():
        write_text_atomic(social_dir / f"{name}.csv", table.to_csv(index=False))
    write_text_atomic(manifest_path, manifest.to_csv(index=False))
    write_text_atomic(root / "skipped_works.csv", pd.DataFrame(skipped, columns=["work", "style", "reason"]).to_csv(index=False))
    write_json_atomic(stamp, {"key": key, "tracks": len(manifest), "skipped_works": len(skipped), "soundfont": str(soundfont),
                              "soundfont_sha256": file_sha256(soundfont), "settings": settings.model_dump(mode="json")})
    return DemoCorpus(root, manifest_path, social_dir, len(manifest), len(skipped), key)


def reusable_stamp(stamp: Path, key: str) -> dict[str, Any] | None:
    """The stamp of a rendered corpus (beside its manifest) when it was made with ``key`` and every
    file of its manifest is still there; else None (render again)."""
    import json

    manifest = stamp.parent / MANIFEST_NAME
    if not (stamp.exists() and manifest.exists()):
        return None
    info = json.loads(stamp.read_text())
    if info.get("key") != key or not all((stamp.parent / u).exists() for u in pd.read_csv(manifest)["uri"]):
        return None
    return info


def render_code() -> str:
    """The SHA-256 of the code that decides a clip's samples (part of its render-cache name)."""
    source = Path(render.__file__).read_text() + inspect.getsource(_render_work) + inspect.getsource(_render_one)
    return hashlib.sha256(source.encode()).hexdigest()


def render_jobs(jobs: list[RenderJob], soundfont: Path, settings: DemoSettings,
                progress: Callable[[int, int], None] | None = None) -> dict[str, str | None]:
    """Render ``jobs`` in ``settings.workers`` processes, taking what the render cache
    (``settings.render_cache``) holds from it; out path -> error (None: rendered)."""
    cache = RenderCache(settings.render_cache or default_render_cache(), soundfont, settings.sample_rate, render_code())
    results: dict[str, str | None] = {}
    pending = []
    for job in jobs:
        found, error = cache.fetch(job)
        if found:
            results[job.out] = error
        else:
            pending.append(job)
    if progress and results:
        progress(len(results), len(jobs))
    if not pending:
        return results
    by_out = {job.out: job for job in pending}
    # forkserver, not fork: forking a process that runs threads (a Prefect API, Dask, torch) can
    # copy a held lock into the child, which then waits forever
    with ProcessPoolExecutor(
        max_workers=settings.workers,
        mp_context=multiprocessing.get_context("forkserver"),
        initializer=_init_worker,
        initargs=(str(soundfont), settings.sample_rate),
    ) as pool:
        for rendered in pool.map(_render_work, _by_work(pending), chunksize=2):
            for out, error in rendered:
                cache.store(by_out[out], error)
            results.update(rendered)
            if progress:
                progress(len(results), len(jobs))
    return results


def render_in_rounds(plan: dict[str, list[RenderJob]], wanted: int, soundfont: Path, settings: DemoSettings,
                     progress: Callable[[int, int], None] | None = None,
                     ) -> tuple[dict[str, list[RenderJob]], list[dict[str, str]]]:
    """Render ``wanted`` tracks per style from each style's candidate jobs, in their order, in
    rounds: each round renders what a style still lacks from its next candidates (a work that
    fails to convert is replaced by the next one), so no spare is rendered only to be thrown
    away. Returns the rendered jobs per style and the works that failed, with the reason."""
    rendered: dict[str, list[RenderJob]] = {style: [] for style in plan}
    tried = dict.fromkeys(plan, 0)
    skipped: list[dict[str, str]] = []
    while True:
        batch = []
        for style, jobs in plan.items():
            need = wanted - len(rendered[style])
            batch += jobs[tried[style]: tried[style] + need]
            tried[style] = min(len(jobs), tried[style] + need)
        if not batch:
            return rendered, skipped
        results = render_jobs(batch, soundfont, settings, progress)
        for job in batch:
            if results[job.out] is None:
                rendered[job.work.style].append(job)
            else:
                skipped.append({"work": job.work.label, "style": job.work.style, "reason": str(results[job.out])})


def _stratified_split(manifest: pd.DataFrame, settings: DemoSettings) -> list[str]:
    names = ("train", "valid", "test")
    split = [""] * len(manifest)
    for style, group in manifest.groupby("style", sort=True):
        rng = np.random.default_rng(seed_for(settings, "split", str(style)))
        idx = group.index.to_numpy()[rng.permutation(len(group))]
        n_valid = max(1, int(round(settings.split[1] * len(idx))))
        n_test = max(1, int(round(settings.split[2] * len(idx))))
        for pos, i in enumerate(idx):
            split[i] = names[2] if pos < n_test else names[1] if pos < n_test + n_valid else names[0]
    return split


def perception_matrices(settings: DemoSettings, rng: np.random.Generator) -> np.ndarray:
    """(communities, 12, 12) row-stochastic: P[c, latent, perceived].

    Each community hears each mood mostly as itself, but confuses it with one community-specific
    other mood; ``uniform_perception`` gives every community the same matrix."""
    k = len(MOODS)
    mats = []
    shared = None
    for _ in range(settings.communities):
        if settings.uniform_perception and shared is not None:
            mats.append(shared)
            continue
        mat = np.full((k, k), 0.1 / (k - 1))
        np.fill_diagonal(mat, 0.55)
        shift = rng.permutation(k)
        for m in range(k):
            other = shift[m] if shift[m] != m else (m + 1) % k
            mat[m, other] += 0.35
        mat /= mat.sum(axis=1, keepdims=True)
        shared = mat
        mats.append(mat)
    return np.stack(mats)


def _surface(mood: str, rng: np.random.Generator, synonyms: dict[str, list[str]]) -> str:
    """A tag as a user types it: a synonym, odd case, stray whitespace, sometimes full-width."""
    form = str(rng.choice(synonyms[mood]))
    style = rng.integers(0, 6)
    if style == 0:
        form = form.upper()
    elif style == 1:
        form = form.title()
    elif style == 2:
        form = f"  {form} "
    elif style == 3:
        form = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in form)  # full-width
    elif style == 4:
        form = form.replace(" ", "\u00a0")
    return form


def _simulate_users(settings: DemoSettings, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """Users with a culture and an age band, and each user's community (0..communities-1)."""
    n_users = max(settings.communities * 2, int(round(settings.users * settings.scale)))
    community = rng.integers(0, settings.communities, size=n_users)
    ids = [hashlib.sha256(f"{settings.seed}-user-{i}".encode()).hexdigest()[:10] for i in range(n_users)]
    users = pd.DataFrame({
        "user_id": [f"u{h}" for h in ids],
        "culture": [f"culture_{chr(97 + c)}" for c in community],
        "age_band": [AGE_BANDS[(c + rng.integers(0, 2)) % len(AGE_BANDS)] for c in community],
    })
    return users, community


def _simulate_follows(users: pd.DataFrame, community: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """A heavy-tailed follow graph, four in five follows within the follower's community."""
    n_users = len(users)
    popularity = rng.pareto(1.2, size=n_users) + 1.0
    follows: set[tuple[int, int]] = set()
    for u in range(n_users):
        degree = int(min(n_users - 1, 2 + rng.pareto(1.5) * 3))
        same = np.flatnonzero(community == community[u])
        other = np.flatnonzero(community != community[u])
        for _ in range(degree):
            pool = same if (rng.random() < 0.8 or other.size == 0) else other
            weights = popularity[pool] / popularity[pool].sum()
            v = int(rng.choice(pool, p=weights))
            if v != u:
                follows.add((u, v))
    rows = sorted(follows)
    return pd.DataFrame({"follower": [users.user_id[a] for a, _ in rows], "followee": [users.user_id[b] for _, b in rows]})


def _playlist_tags(theme: int, perceived: np.ndarray, rng: np.random.Generator, synonyms: dict[str, list[str]]) -> list[str]:
    """A playlist's tags: its theme's surface form, sometimes a second perceived mood, sometimes noise."""
    tags = [_surface(MOODS[theme], rng, synonyms)]
    if rng.random() < 0.35:  # a second perceived mood of the theme
        second = int(rng.choice(len(MOODS), p=perceived[theme]))
        if second != theme:
            tags.append(_surface(MOODS[second], rng, synonyms))
    if rng.random() < 0.4:
        tags.append(str(rng.choice(OFF_VOCABULARY)).title() if rng.random() < 0.5 else str(rng.choice(OFF_VOCABULARY)))
    return tags


def simulate_crowd(tracks: pd.DataFrame, settings: DemoSettings) -> dict[str, pd.DataFrame]:
    """Users in communities, a heavy-tailed follow graph denser within communities, and playlists
    whose tags follow each community's perception of the tracks' latent moods."""
    synonyms = yaml.safe_load(resources.files("chorus.social").joinpath("synonyms.yaml").read_text())
    rng = np.random.default_rng(seed_for(settings, "crowd"))
    users, community = _simulate_users(settings, rng)
    follows = _simulate_follows(users, community, rng)
    perception = perception_matrices(settings, rng)
    latent = np.array([MOODS.index(m) for m in tracks["mood"]])
    playlists: list[dict[str, str]] = []
    members: list[dict[str, str]] = []
    lo, hi = settings.playlists_per_user
    size_lo, size_hi = settings.playlist_size
    for u in range(len(users)):
        mat = perception[community[u]]
        for j in range(int(rng.integers(lo, hi + 1))):
            theme = int(rng.integers(0, len(MOODS)))
            # A user adds tracks they hear as the theme: weight by P(perceived = theme | latent).
            weights = mat[latent, theme]
            weights = weights / weights.sum()
            size = min(len(tracks), int(rng.integers(size_lo, size_hi + 1)))
            chosen = rng.choice(len(tracks), size=size, replace=False, p=weights)
            tags = _playlist_tags(theme, mat, rng, synonyms)
            playlist_id = f"p{hashlib.sha256(f'{settings.seed}-{u}-{j}'.encode()).hexdigest()[:12]}"
            playlists.append({"playlist_id": playlist_id, "owner": users.user_id[u], "tags": ";".join(tags)})
            members.extend({"playlist_id": playlist_id, "track_id": tracks.track_id.iloc[i]} for i in sorted(chosen))
    return {"users": users, "follows": follows, "playlists": pd.DataFrame(playlists),
            "playlist_tracks": pd.DataFrame(members)}
