"""The index and search stages: semantic vectors and hash codes of every corpus track for the
models at ``search.alias``, faiss indexes and the degraded-copy check; nearest tracks of queries."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from chorus import registry
from chorus.audio import AudioProblem
from chorus.compute import dask_client
from chorus.config import ChorusSettings, IngestSettings, stable_hash
from chorus.errors import InputError, StaleFeaturesError
from chorus.features import load_features
from chorus.ingest import TRACK_COLUMNS, probe_within_limits
from chorus.io import write_parquet
from chorus.search import SearchIndex
from chorus.search.degraded import check_tracks, degraded_maps, degraded_query_check
from chorus.search.encode import ModelVersion, TrackEncoder
from chorus.search.index import Mode, read_index_meta
from chorus.stages.context import StageContext, StageSummary, log, shared_validator
from chorus.stages.inputs import feature_configurations, index_folder, load_tracks, search_models, stored_features_keys, voted_global_labels
from chorus.state import StateDir
from chorus.tagging import audio_files
from chorus.validation import Validator, with_known_tracks


def index_key(settings: ChorusSettings, semantic: ModelVersion, hashing: ModelVersion) -> str:
    """What a search index depends on: both model versions, the stored features, the search settings."""
    stored = stored_features_keys(StateDir(settings.state_dir).features, settings.features)
    return stable_hash([str(semantic), str(hashing), settings.search.config_hash(), *stored.values()])


def _index_on_disk(settings: ChorusSettings,
                   state: StateDir) -> tuple[ModelVersion, ModelVersion, Path, str, dict[str, Any] | None]:
    """The models at ``search.alias``, their index folder, the key an index of them must carry,
    and what the folder's index.json records (None: not built). InputError: no such model."""
    semantic, hashing = search_models(settings)
    folder = index_folder(state, semantic, hashing)
    return semantic, hashing, folder, index_key(settings, semantic, hashing), read_index_meta(folder)


def current_index_key(settings: ChorusSettings) -> str | None:
    """The index's key when the index on disk belongs to the models now at ``search.alias`` and
    the current features and settings, else None (it must be built, or there is no model yet)."""
    state = StateDir(settings.state_dir)
    registry.configure(settings.tracking_uri, state.mlflow_artifacts, settings.orchestration.service_wait_s)
    try:
        _, _, _, key, meta = _index_on_disk(settings, state)
    except InputError:
        return None
    return key if meta is not None and meta.get("key") == key else None


def index_stage(settings: ChorusSettings, validator: Validator | None = None, if_models: bool = False) -> StageSummary:
    """Semantic vectors and hash codes of every track of the corpus, from the stored features,
    for the models at ``search.alias``; faiss indexes; then the degraded-copy check. Skipped when
    the index on disk was built from the same versions, features and settings, and (``if_models``,
    as in the pipeline) when a model has no version at the alias yet."""
    ctx = StageContext.open(settings, uses_registry=True, stage="index")
    try:
        semantic, hashing, folder, key, meta = _index_on_disk(settings, ctx.state)
    except InputError as missing:
        if not if_models:
            raise
        log.warning("no search index: %s", missing)
        return ctx.summary("index", True, {}, {"reason": str(missing)})
    if meta is not None and meta.get("key") == key:
        return ctx.summary("index", True, {"index": str(folder)}, _index_counts(meta))
    encoder = TrackEncoder.from_registry(semantic, hashing)
    if encoder.features.config_hash() not in feature_configurations(settings.features):
        raise StaleFeaturesError(f"{semantic} was trained on features {encoder.features.config_hash()}, the corpus's are "
                                 f"{settings.features.config_hash()}: retrain it (chorus run) or set the feature settings back")
    features = load_features(ctx.state.features, encoder.features, maps=encoder.maps)
    track_ids, vectors, codes = encoder.encode_segments(features.maps, features.segments["track_id"].to_numpy())
    search = settings.search
    meta = {"key": key, "name": folder.name, "semantic": semantic.__dict__, "hash": hashing.__dict__,
            "feature_config_hash": encoder.features.config_hash(), "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    index = SearchIndex.build(track_ids, vectors, codes, meta, search.approximate_above, search.ivf_lists, search.ivf_probe)
    tracks = load_tracks(settings)
    (validator or shared_validator(settings)).validate(
        with_known_tracks(index.checks(), tracks["track_id"]), "search_index",
        {"tracks": tracks["track_id"].nunique(), "code_bytes": index.bits // 8})
    index.meta["check"] = degraded_check(settings, index, encoder, tracks)
    index.save(folder)
    log.info("index %s: %d tracks; original in top %d from degraded copies: %s", folder.name, len(index),
             search.check.k, index.meta["check"]["worst"])
    return ctx.summary("index", False, {"index": str(folder)}, _index_counts(index.meta))


def _index_counts(meta: dict[str, Any]) -> dict[str, Any]:
    return {"tracks": meta["tracks"], "bits": meta["bits"], "dims": meta["dims"],
            "semantic": f"{meta['semantic']['name']} v{meta['semantic']['version']}",
            "hash": f"{meta['hash']['name']} v{meta['hash']['version']}",
            "degraded_found_in_top_k": meta["check"]["worst"]}


def degraded_check(settings: ChorusSettings, index: SearchIndex, encoder: TrackEncoder,
                   tracks: pd.DataFrame) -> dict[str, Any]:
    """``search.check.tracks`` corpus tracks (the test split's first) queried with degraded copies
    of their audio; the copies' features are extracted on Dask like the corpus's."""
    check = settings.search.check
    tracks = tracks.set_index("track_id")
    held_out = set(tracks.index[tracks["split"] == "test"])
    chosen = check_tracks([t for t in index.track_ids if t in tracks.index], check, held_out)
    uris = tracks.loc[chosen, "uri"].tolist()
    n = len(chosen)
    with dask_client(settings.compute) as client:
        futures = client.map(degraded_maps, chosen, uris, [encoder.features] * n, [check] * n, [encoder.maps] * n, pure=False)
        copies = dict(zip(chosen, client.gather(futures), strict=True))
    return {**degraded_query_check(index, encoder, copies, check.k, settings.search.rerank_candidates, held_out),
            "settings": check.model_dump(mode="json")}


def load_index(settings: ChorusSettings) -> SearchIndex:
    """The index of the models now at ``search.alias`` (its folder names both versions; a clear
    error when it is not built)."""
    state = StateDir(settings.state_dir)
    registry.configure(settings.tracking_uri, state.mlflow_artifacts, settings.orchestration.service_wait_s)
    return SearchIndex.load(index_folder(state, *search_models(settings)))


def track_labels(settings: ChorusSettings) -> pd.DataFrame:
    """Per track: its label columns from the corpus and its globally voted moods (when voted)."""
    tracks = load_tracks(settings)
    table = tracks[["track_id", *[c for c in tracks.columns if c not in TRACK_COLUMNS]]].set_index("track_id")
    voted = voted_global_labels(settings)
    if voted:
        table["voted_moods"] = table.index.map(lambda t: ", ".join(voted.get(t, [])))
    return table


def _query_list(queries: list[str]) -> list[str]:
    """The queries with each folder replaced by the audio files under it."""
    return [q for query in queries for q in ([str(f) for f in audio_files([Path(query).expanduser()])]
                                             if Path(query).expanduser().is_dir() else [query])]


def _encode_queries(index: SearchIndex, queries: list[str],
                    limits: IngestSettings) -> tuple[np.ndarray, np.ndarray, list[int | None]]:
    """Vectors and codes of each query (an audio file within ingest's limits, encoded with the index's models, or a
    track id of the index, or a 6+ character prefix of one), and the index position to leave out
    of each query's results (the track itself)."""
    encoder: TrackEncoder | None = None
    vectors, codes, exclude = [], [], []
    for query in queries:
        path = Path(query).expanduser()
        position: int | None = None
        if path.is_file():
            try:
                probe_within_limits(path, limits)
            except AudioProblem as problem:
                raise InputError(query, problem.reason, problem.detail) from problem
            if encoder is None:
                encoder = TrackEncoder.from_registry(ModelVersion(**index.meta["semantic"]), ModelVersion(**index.meta["hash"]))
            vector, code = encoder.encode_file(path.resolve())
        else:
            matches = [i for i, t in enumerate(index.track_ids) if str(t).startswith(query)] if len(query) >= 6 else []
            if len(matches) != 1:
                rule = "neither an audio file nor a track id of the index" if not matches else "matches several track ids"
                raise InputError(query, rule, f"index {index.meta['name']}: {len(index)} tracks")
            position = matches[0]
            vector, code = index.vectors[position], index.codes[position]
        vectors.append(vector)
        codes.append(code)
        exclude.append(position)
    return np.stack(vectors), np.stack(codes), exclude


def search_stage(settings: ChorusSettings, queries: list[str], k: int | None = None, mode: str | None = None,
                 out: str | None = None) -> StageSummary:
    """Nearest tracks of each query, an audio file or folder (encoded with the index's models and
    their feature settings) or a track id (or a 6+ character prefix of one) of the corpus (left out
    of its own results); to Parquet (default ``<state>/search/results/<digest>.parquet``)."""
    ctx = StageContext.open(settings, stage="search")
    k, mode = k or settings.search.k, mode or settings.search.mode
    chosen = ctx.output_file(out) if out else None
    index = load_index(settings)
    queries = _query_list(queries)
    vectors, codes, exclude = _encode_queries(index, queries, settings.ingest)
    hits = index.search(vectors, codes, k, cast(Mode, mode), settings.search.rerank_candidates, exclude=exclude)
    hits.insert(0, "like", [queries[q] for q in hits["query"]])
    hits = hits.drop(columns="query").join(track_labels(settings), on="track_id")
    hits["mode"], hits["index"] = mode, index.meta["name"]
    digest = stable_hash([index.meta["key"], queries, k, mode])
    target = chosen or ctx.state.search_results / f"{digest}.parquet"
    write_parquet(hits, target)
    return ctx.summary("search", False, {"results": str(target)},
                       {"queries": len(queries), "k": k, "mode": mode, "index": index.meta["name"]})
