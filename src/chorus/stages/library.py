"""The library stage: a user's own music, unlabelled, after ingest and features in its own state
directory (``chorus.stages.inputs.library_settings``). Every track gets the pretrained taggers'
strongest tags; one tagger's penultimate layer places the tracks in a search index (exact cosine
search, with ITQ codes fit on the library for the Hamming modes); the catalogue page lists tracks,
tags, nearest neighbours and an audio player for each local file. Nothing is trained."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from chorus import registry
from chorus.audio import AudioProblem
from chorus.baselines import ItqHasher, itq_codes
from chorus.config import ChorusSettings, stable_hash
from chorus.errors import InputError
from chorus.features import extract_track
from chorus.ingest import probe_within_limits
from chorus.io import output_is_current, read_meta, read_table, write_parquet, write_text_atomic
from chorus.models.scorer import Scorer
from chorus.pages import render_page
from chorus.search import SearchIndex
from chorus.search.codes import pack_codes
from chorus.search.index import Mode, mean_direction, read_index_meta, unit_rows
from chorus.stages.context import StageContext, StageSummary
from chorus.stages.inputs import FeatureSets, audio_inputs, load_tracks, registered_version, stored_features_keys
from chorus.state import StateDir
from chorus.tagging import model_feature_settings, tag_files
from chorus.training import track_mean

TAG_COLUMNS = ["track_id", "uri", "tagger", "model", "version", "tags", "scores"]


def library_paths(state: StateDir) -> dict[str, Path]:
    """The library's outputs: its tags table, its search index folder and its catalogue page."""
    return {"tags": state.tags / "library.parquet", "index": state.search / "library",
            "catalogue": state.reports / "catalogue.html"}


def _taggers(settings: ChorusSettings) -> dict[str, registry.ModelRef]:
    """Each tagger's registered version (registered by the library run's train stage)."""
    found = {}
    for candidate in dict.fromkeys([*settings.library.taggers, settings.library.embedding]):
        ref = registered_version(settings, candidate)
        if ref is None:
            raise InputError(f"library tagger {candidate}", "not registered",
                             "run `chorus run --library DIR` (it registers the pretrained taggers)")
        found[candidate] = ref
    return found


def library_key(settings: ChorusSettings, taggers: dict[str, registry.ModelRef]) -> str:
    """What the library's outputs depend on: the stored features, the tagger versions, the settings."""
    state = StateDir(settings.state_dir)
    return stable_hash({"features": stored_features_keys(state.features, settings.features),
                        "taggers": {c: [r.name, r.version] for c, r in taggers.items()},
                        "library": settings.library.model_dump(mode="json", exclude={"folder"})})


def library_stage(settings: ChorusSettings) -> StageSummary:
    """Tags, index and catalogue of the library ingested and extracted under ``settings``
    (the library run's settings); skipped when all three were made from the same inputs."""
    ctx = StageContext.open(settings, uses_registry=True, stage="library")
    paths = library_paths(ctx.state)
    taggers = _taggers(settings)
    key = library_key(settings, taggers)
    outputs = {name: str(path) for name, path in paths.items()}
    meta = read_index_meta(paths["index"])
    if output_is_current(paths["tags"], key) and meta is not None and meta.get("key") == key and paths["catalogue"].exists():
        return ctx.summary("library", True, outputs, (read_meta(paths["tags"]) or {}).get("summary", {}))
    tracks = load_tracks(settings)
    ids = tracks["track_id"].astype(str).tolist()
    features = FeatureSets(ctx.state.features, settings.features, ids)
    tags, vectors = [], None
    for candidate, ref in taggers.items():
        scorer = registry.load_scorer(ref.name, ref.version)
        stored = features.for_contract(scorer.contract)
        scorer.contract.check_features(stored.config_hash)
        segments = stored.stacked(scorer.contract.stored_maps)
        owner = stored.segments["track_id"].to_numpy()
        if candidate in settings.library.taggers:
            track_ids, scores = track_mean(scorer.scores(segments), owner)
            tags.append(_top_tags(candidate, ref, scorer, np.asarray(track_ids), np.asarray(scores), settings.library.top_n))
        if candidate == settings.library.embedding:
            track_ids, embedded = track_mean(unit_rows(scorer.embed(segments)), owner)
            vector_ids, vectors = np.asarray(track_ids).astype(str), unit_rows(np.asarray(embedded, np.float32))
    assert vectors is not None  # the embedding tagger is among the taggers
    hasher = ItqHasher(settings.library.hash_bits, random_state=settings.library.seed).fit(vectors)
    embedding = taggers[settings.library.embedding]
    index = SearchIndex.build(vector_ids, vectors, hasher.transform(vectors), {
        "name": "library", "key": key, "embedding": {"name": embedding.name, "version": embedding.version,
                                                     "candidate": settings.library.embedding},
        "features": settings.features.config_hash(), "hasher": hasher.to_arrays()})
    index.save(paths["index"])
    table = pd.concat(tags, ignore_index=True).merge(tracks[["track_id", "uri"]].astype({"track_id": str}), on="track_id")
    table = table[TAG_COLUMNS]
    counts = {"tracks": len(ids), "indexed": len(index), "taggers": len(settings.library.taggers),
              "quarantined": _quarantined(ctx.state, settings.features.config_hash())}
    write_parquet(table, paths["tags"], meta={"key": key, "summary": counts})
    neighbours = index.search_tracks(list(index.track_ids), k=min(settings.library.neighbours, max(len(index) - 1, 1)),
                                     mode="semantic")
    neighbours["query_id"] = index.track_ids[neighbours["query"].to_numpy()].astype(str)
    write_text_atomic(paths["catalogue"], catalogue_page(settings, tracks, table, neighbours, counts))
    return ctx.summary("library", False, outputs, counts)


def _quarantined(state: StateDir, config_hash: str) -> int:
    """Files ingest or extraction refused (each kept with its reason in the quarantine tables)."""
    return sum(len(read_table(p)) for p in (state.ingest_quarantine, state.features_quarantine(config_hash)) if p.exists())


def _top_tags(candidate: str, ref: registry.ModelRef, scorer: Scorer, track_ids: np.ndarray, scores: np.ndarray,
              top_n: int) -> pd.DataFrame:
    """Per track: the tagger's ``top_n`` strongest tags (a pretrained tagger's scores are not
    calibrated to a threshold) and their scores."""
    labels = np.asarray(scorer.contract.labels)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top_n]
    return pd.DataFrame({"track_id": track_ids.astype(str), "tagger": candidate, "model": ref.name, "version": ref.version,
                         "tags": [labels[row].tolist() for row in order],
                         "scores": [np.round(scores[i, row], 4).tolist() for i, row in enumerate(order)]})


def catalogue_page(settings: ChorusSettings, tracks: pd.DataFrame, tags: pd.DataFrame, neighbours: pd.DataFrame,
                   counts: dict[str, Any]) -> str:
    """The library's catalogue: one row per track (its file, an audio player, each tagger's top
    tags, its nearest tracks), from the Jinja2 template ``catalogue.html.j2`` (autoescaped)."""
    uri = tracks.set_index(tracks["track_id"].astype(str))["uri"].astype(str)
    names = {t: Path(u).name for t, u in uri.items()}
    by_track: dict[str, dict[str, Any]] = {t: {"track_id": t, "name": names[t], "path": uri[t], "audio": _audio_source(uri[t]),
                                               "tags": [], "neighbours": []} for t in uri.index}
    for row in tags.itertuples():
        by_track[row.track_id]["tags"].append({"tagger": row.tagger, "tags": list(zip(row.tags, row.scores, strict=True))})
    for row in neighbours.itertuples():
        if row.query_id in by_track:
            by_track[row.query_id]["neighbours"].append({"track_id": row.track_id, "name": names.get(row.track_id, row.track_id),
                                                  "cosine": round(float(row.cosine), 3)})
    rows = sorted(by_track.values(), key=lambda r: r["path"])
    return render_page("catalogue.html.j2", title="chorus · music library", folder=settings.library.folder or "",
                       counts=counts, tracks=rows, taggers=settings.library.taggers)


def _audio_source(uri: str) -> str | None:
    """A file:// address for the page's player where the track is a local file."""
    path = Path(uri)
    return path.as_uri() if path.is_absolute() and path.exists() else None


def library_search_stage(settings: ChorusSettings, queries: list[str], k: int = 10, mode: str = "semantic",
                         out: str | None = None) -> StageSummary:
    """Nearest library tracks of each query (an audio file or a folder of them), encoded with the
    library's embedding tagger and hasher; to Parquet (default ``<state>/search/results/``)."""
    ctx = StageContext.open(settings, uses_registry=True, stage="search")
    folder = library_paths(ctx.state)["index"]
    if read_index_meta(folder) is None:
        raise InputError(str(folder), "no library index", "run `chorus run --library DIR` first")
    index = SearchIndex.load(folder)
    files, digest = audio_inputs(queries)
    embedding = index.meta["embedding"]
    scorer = registry.load_scorer(embedding["name"], int(embedding["version"]))
    features = model_feature_settings(embedding["name"], int(embedding["version"]))
    vectors = []
    for path in files:
        try:
            probe_within_limits(path, settings.ingest)
            item = extract_track(path.stem, str(path), features)
        except AudioProblem as problem:
            raise InputError(str(path), problem.reason, problem.detail) from problem
        stacked = np.stack([item.maps[m] for m in scorer.contract.stored_maps], axis=1)
        vectors.append(mean_direction(scorer.embed(stacked)))
    queries_v = np.stack(vectors)
    codes = pack_codes(itq_codes(index.meta["hasher"], queries_v))
    hits = index.search(queries_v, codes, min(k, len(index)), cast(Mode, mode))
    hits.insert(0, "like", [str(files[q]) for q in hits["query"]])
    uri = load_tracks(settings).set_index("track_id")["uri"].astype(str)
    hits = hits.drop(columns="query").assign(uri=lambda h: h["track_id"].map(uri), mode=mode, index="library")
    target = ctx.output_file(out) if out else \
        ctx.state.search_results / f"library-{stable_hash([index.meta['key'], digest, k, mode])}.parquet"
    write_parquet(hits, target)
    return ctx.summary("search", False, {"results": str(target)}, {"queries": len(files), "k": k, "mode": mode,
                                                                   "index": "library"})


def library_tag_stage(settings: ChorusSettings, paths: list[str], out: str | None = None, top_n: int | None = None,
                      threshold: float | None = None) -> StageSummary:
    """Every library tagger's tags for audio files or folders (no trained model needed), to
    Parquet (default ``<state>/tags/library-<files digest>.parquet``)."""
    ctx = StageContext.open(settings, uses_registry=True, stage="tag")
    files, digest = audio_inputs(paths)
    taggers = {c: ref for c, ref in _taggers(settings).items() if c in settings.library.taggers}
    table = pd.concat([tag_files(files, ref.name, settings.ingest, str(ref.version), top_n, threshold) for ref in taggers.values()],
                      ignore_index=True)
    target = ctx.output_file(out) if out else \
        ctx.state.tags / f"library-{stable_hash([digest, sorted(taggers), top_n, threshold])}.parquet"
    write_parquet(table, target)
    return ctx.summary("tag", False, {"predictions": str(target)},
                       {"files": len(files), "tagged": int(table["problem"].isna().sum() // max(len(taggers), 1)),
                        "models": ", ".join(f"{r.name} v{r.version}" for r in taggers.values())})
