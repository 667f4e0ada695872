"""The personal stage: the personalised mood model (``chorus.personal``) on the mood tagger's
embedding, fit on the training songs' personal truth, its listener shrinkage chosen on valid
listeners' valid songs, judged by the article's protocol on test songs, stored without pickle and
registered as ``<prefix>-personal-mood``."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chorus import MOODS, registry
from chorus.config import ChorusSettings, stable_hash
from chorus.errors import InputError
from chorus.ingest import forgotten_users
from chorus.io import read_meta, read_table, write_json_atomic, write_parquet
from chorus.personal.model import PersonalFit, PersonalMoodModel, fit_personal_model
from chorus.personal.protocol import held_out, judge, listener_groups, training_pairs
from chorus.personal.store import load_personal_model, save_personal_model
from chorus.social.tally import VoteTally, tally_votes
from chorus.social.voting import weighted_vote
from chorus.stages.context import StageContext, StageSummary, update_metrics
from chorus.stages.inputs import FeatureSets, audio_inputs, load_tracks, social_data_present, social_table_paths, train_key, training_tracks
from chorus.state import StateDir
from chorus.training import track_mean

ENCODER_CANDIDATE = "mood_tagger"
REPORT_FILE = "personal.json"
EMBEDDINGS_FILE = "embeddings.parquet"  # the catalogue's embeddings, for playlists


def personal_model_name(settings: ChorusSettings) -> str:
    return settings.train.registered_name("personal-mood")


def _encoder(settings: ChorusSettings) -> tuple[str, registry.ModelRef | None]:
    """The registered version of the mood tagger trained on the current data (the frozen encoder)."""
    ts = settings.train
    name = ts.registered_name(ts.mood_task)
    return name, registry.find_version(name, train_key(settings, training_tracks(settings), ENCODER_CANDIDATE))


def track_embeddings(settings: ChorusSettings, state: StateDir, name: str, version: int,
                     track_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(track ids, embeddings (tracks, d)): the encoder's penultimate layer, mean over segments."""
    scorer = registry.load_scorer(name, version)
    features = FeatureSets(state.features, settings.features, track_ids).for_contract(scorer.contract)
    ids, vectors = track_mean(scorer.embed(features.stacked(scorer.contract.stored_maps)), features.segments["track_id"].to_numpy())
    return np.asarray(ids), np.asarray(vectors, np.float64)


def personal_stage(settings: ChorusSettings) -> StageSummary:
    ctx = StageContext.open(settings, uses_registry=True, stage="personal")
    state, ps = ctx.state, settings.personal
    if not social_data_present(settings):
        return ctx.summary("personal", True, {}, {"reason": "no social data: no listener to personalise for"})
    name, encoder = _encoder(settings)
    if encoder is None:
        return ctx.summary("personal", True, {}, {"reason": f"no registered {ENCODER_CANDIDATE} of the current data "
                                                            "(the encoder): train it (train.candidates)"})
    labels_meta = read_meta(state.labels_table) or {}
    tracks = load_tracks(settings)
    digest_key = forgotten_users(state.social, make_key=True).key
    key = stable_hash([encoder.uri, labels_meta.get("key"), ps.config_hash(), settings.labels.config_hash(),
                       tracks[["track_id", "split"]].astype(str).values.tolist(),
                       hashlib.sha256(digest_key).hexdigest()])  # a new key (rekey-forgotten) renames every listener
    description_path = state.personal / "personal.json"
    if description_path.exists() and json.loads(description_path.read_text()).get("key") == key:
        return ctx.summary("personal", True, {"model": str(state.personal)}, {"reason": "current"})

    tally = tally_votes(social_table_paths(state), set(tracks["track_id"]), settings.labels.synonyms_file)
    ids, vectors = track_embeddings(settings, state, name, encoder.version, tracks["track_id"].tolist())
    global_model = _global_mood_model(settings, state, tracks)
    fitted = _fit_and_judge(settings, state, tally, ids, vectors, tracks.set_index("track_id")["split"], global_model)
    model, report = fitted["model"], fitted["report"]
    report["encoder"] = {"name": name, "version": encoder.version, "candidate": ENCODER_CANDIDATE}
    digest = save_personal_model(model, state.personal, {"key": key, "encoder": report["encoder"], "fit": fitted["fit"]})
    write_parquet(pd.DataFrame({"track_id": ids, "embedding": list(vectors.astype(np.float32))}),
                  state.personal / EMBEDDINGS_FILE, {"encoder": report["encoder"]})
    version = _register(settings, state, model, report, digest)
    write_json_atomic(state.reports / REPORT_FILE, {"key": key, **report, "version": version})
    update_metrics(state.metrics, "personal_model", {**report, "version": version})
    test = report["test"]
    counts: dict[str, Any] = {"listeners": len(model.listeners), "with_own_head": int((model.listeners["songs"] >= ps.min_songs).sum()),
                              "groups": len(model.group_heads), "listener_shrinkage": fitted["fit"]["listener_shrinkage"],
                              "version": version}
    if test.get("listeners"):
        counts.update(f1_personalised=round(test["schemes"]["personalised"]["f1"]["mean"], 4),
                      f1_global_head=round(test["schemes"]["global head"]["f1"]["mean"], 4),
                      share_of_truth_margin=test["share_of_truth_margin"])
    return ctx.summary("personal", False, {"model": str(state.personal), "report": str(state.reports / REPORT_FILE)}, counts)


def _global_mood_model(settings: ChorusSettings, state: StateDir, tracks: pd.DataFrame) -> tuple[str, dict[str, np.ndarray]] | None:
    """The registered mood model's champion (one answer for every listener) and its 12 scores of
    each valid and test track, averaged over segments; None without a champion or its features."""
    from chorus.errors import ChorusError

    name = settings.train.registered_name(settings.train.mood_task)
    version = registry.alias_version(name, "champion")
    if version is None:
        return None
    scorer = registry.load_scorer(name, version)
    if list(scorer.contract.labels) != list(MOODS):
        return None
    held = tracks.loc[tracks["split"].isin(["valid", "test"]), "track_id"].tolist()
    try:
        features = FeatureSets(state.features, settings.features, held).for_contract(scorer.contract)
        scorer.contract.check_features(features.config_hash)
    except (ChorusError, ValueError, KeyError):
        return None
    ids, scores = track_mean(scorer.scores(features.stacked(scorer.contract.stored_maps)), features.segments["track_id"].to_numpy())
    return f"{name} v{version}", dict(zip(ids, np.asarray(scores, np.float64), strict=True))


def _fit_and_judge(settings: ChorusSettings, state: StateDir, tally: VoteTally, ids: np.ndarray, vectors: np.ndarray,
                   split_of: Any, global_model: tuple[str, dict[str, np.ndarray]] | None = None) -> dict[str, Any]:
    """Fit on train songs for each listener shrinkage, choose on valid, report on test; the
    global mood model (``global_model``: its name and scores per held-out track) judged beside."""
    ps, ls = settings.personal, settings.labels
    graph, tags, users = tally.built.graph, tally.tags, tally.users
    row_of = {t: i for i, t in enumerate(ids)}
    song_row = np.array([row_of.get(t, -1) for t in tags.track_ids])
    song_split = np.array([split_of.get(t, "") for t in tags.track_ids])
    has_audio = song_row >= 0
    train_songs = has_audio & (song_split == "train")
    listeners = np.arange(graph.n_users)
    key = forgotten_users(state.social, make_key=True)
    digests = [key.digest(u) for u in np.asarray(graph.user_ids).astype(str)]
    attribute = next((a for a in ls.group_by if a in users.columns), None) if ps.groups == "column" else None
    if attribute is None:  # communities of the follow graph
        from chorus.social.communities import follow_communities

        groups = [f"community={c}" for c in follow_communities(graph, seed=ps.seed)]
        attribute = "community (follow graph)"
    else:
        groups = listener_groups(users, graph, listeners, attribute)
    pairs = training_pairs(graph, tags, listeners, train_songs, ls, ps.batch)
    everyone = weighted_vote(np.ones((1, graph.n_users), np.float32), tags)
    global_truth = np.full((tags.n_songs, 12), np.nan)
    global_truth[everyone.song] = everyone.scores
    train_rows = np.flatnonzero(train_songs)
    embeddings = vectors[np.maximum(song_row, 0)]
    rng = np.random.default_rng(ps.seed)
    holdouts = {split: held_out(tags, has_audio & (song_split == split), ps.min_held_out_songs, ps.judged_listeners, rng)
                for split in ("valid", "test")}

    def predictors(model: PersonalMoodModel) -> dict[str, Any]:
        chosen = {"personalised": lambda u, songs: model.predict(embeddings[songs], listener=digests[u])[0],
                  "group head": lambda u, songs: model.predict(embeddings[songs], group=groups[u])[0],
                  "global head": lambda u, songs: model.predict(embeddings[songs])[0]}
        if global_model is not None:
            scores = global_model[1]
            chosen["global mood model"] = lambda u, songs: np.stack(
                [scores.get(str(tags.track_ids[s]), np.full(12, 0.5)) for s in songs])
        return chosen

    candidates = []
    for shrinkage in ps.listener_shrinkage:
        fit = PersonalFit(ps.dims, ps.global_ridge, ps.group_shrinkage, shrinkage, ps.min_songs, ps.batch)
        model = fit_personal_model(vectors[song_row[train_rows]], global_truth[train_rows], pairs.listener,
                                   np.searchsorted(train_rows, pairs.song), pairs.scores, digests, groups, fit)
        valid = judge(graph, tags, users, ls, holdouts["valid"], predictors(model), ls.top_k, ps.bootstrap, ps.seed)
        score = valid["schemes"]["personalised"]["f1"]["mean"] if valid.get("listeners") else 0.0
        candidates.append((score, shrinkage, model, valid))
    score, shrinkage, model, valid = max(candidates, key=lambda c: (c[0], -c[1]))
    test = judge(graph, tags, users, ls, holdouts["test"], predictors(model), ls.top_k, ps.bootstrap, ps.seed)
    report = {"group_attribute": attribute, "train_pairs": int(len(pairs.listener)),
              "global_mood_model": global_model[0] if global_model else None,
              "chosen_on_valid": {str(s): round(c, 4) for c, s, _, _ in candidates}, "valid": _brief(valid), "test": test}
    return {"model": model, "report": report,
            "fit": {"listener_shrinkage": shrinkage, "group_shrinkage": ps.group_shrinkage, "dims": ps.dims,
                    "min_songs": ps.min_songs, "group_attribute": attribute}}


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "per_listener_f1"}


def _register(settings: ChorusSettings, state: StateDir, model: PersonalMoodModel, report: dict[str, Any], digest: str) -> int:
    """One MLflow run (parameters, test metrics, the listener table's hash) and a registered pyfunc
    version of ``<prefix>-personal-mood`` holding the stored model."""
    import mlflow
    import pandas as pd

    from chorus.personal.serving import MODEL_CODE, PERSONAL_ARTIFACT
    from chorus.serving import pip_requirements

    name = personal_model_name(settings)
    test = report["test"]
    example = pd.DataFrame([[model.listeners["listener"].iloc[0], *model.mean.tolist()]],
                           columns=["listener", *[f"e{i}" for i in range(len(model.mean))]])
    with mlflow.start_run(run_name="train-personal-mood"):
        mlflow.log_params({"encoder": f"{report['encoder']['name']}/{report['encoder']['version']}",
                           "group_attribute": str(report["group_attribute"]), "listeners": len(model.listeners),
                           "listeners_sha256": digest, **{f"personal.{k}": str(v) for k, v in
                                                           settings.personal.model_dump(mode="json").items()}})
        if test.get("listeners"):
            mlflow.log_metrics({f"test_f1_{k.replace(' ', '_')}": v["f1"]["mean"] for k, v in test["schemes"].items()})
        mlflow.set_tags({registry.CANDIDATE_TAG: "personal_mood", "chorus.listeners_sha256": digest})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "report.json"
            path.write_text(json.dumps(report, indent=1, default=str))
            mlflow.log_artifact(str(path), artifact_path="provenance")
        info = mlflow.pyfunc.log_model(name="model", python_model=str(MODEL_CODE),
                                       artifacts={PERSONAL_ARTIFACT: str(state.personal)},
                                       input_example=example, pip_requirements=pip_requirements(),
                                       registered_model_name=name, await_registration_for=60)
    version = int(info.registered_model_version)
    registry.set_alias(name, "challenger", version)
    # the gate, on valid listeners' valid songs: personalisation must beat its own global head with confidence
    margin = (report["valid"].get("margins_f1") or {}).get("personalised - global head")
    if margin and margin["ci"][0] > 0:
        registry.set_alias(name, "champion", version)
    return version


def load_personal(settings: ChorusSettings) -> PersonalMoodModel:
    """The personalised model the last personal stage stored."""
    return load_personal_model(StateDir(settings.state_dir).personal)


def listener_tag_stage(settings: ChorusSettings, paths: list[str], user: str | None = None, group: str | None = None,
                       out: str | None = None) -> StageSummary:
    """The personalised mood model's moods for audio files or folders as ``user`` (a user id) or
    ``group`` ("attribute=value") hears each, to Parquet (default
    ``<state>/tags/<model>-<files and listener digest>.parquet``)."""
    ctx = StageContext.open(settings, uses_registry=True, stage="tag")
    chosen = ctx.output_file(out) if out else None
    files, digest = audio_inputs(paths)
    table = tag_as_listener(settings, files, user, group)
    who = f"user {user}" if user is not None else f"group {group}"
    target = chosen or ctx.state.tags / f"{personal_model_name(settings)}-{stable_hash([digest, who])}.parquet"
    write_parquet(table, target)
    return ctx.summary("tag", False, {"predictions": str(target)},
                       {"files": len(files), "tagged": int(table["problem"].isna().sum()),
                        "model": f"{personal_model_name(settings)} as {who}",
                        "levels": table["level"].dropna().value_counts().to_dict()})


def tag_as_listener(settings: ChorusSettings, files: list[Path], user: str | None = None,
                    group: str | None = None) -> pd.DataFrame:
    """One row per file: the 12 mood scores as ``user`` (a user id) or ``group`` ("attribute=value")
    hears it, the top ``labels.top_k`` moods and the level that answered (listener, group, global).
    Files that cannot be decoded keep their reason."""
    from chorus.audio import AudioProblem
    from chorus.features import extract_track_or_problem
    from chorus.ingest import probe_within_limits
    from chorus.tagging import model_feature_settings

    state = StateDir(settings.state_dir)
    described = state.personal / "personal.json"
    if not described.exists():
        raise InputError(str(state.personal), "no personalised model", "run `chorus personal` (or `chorus run`) first")
    encoder = json.loads(described.read_text())["encoder"]
    model = load_personal_model(state.personal)
    scorer = registry.load_scorer(encoder["name"], int(encoder["version"]))
    features = model_feature_settings(encoder["name"], int(encoder["version"]))
    listener = forgotten_users(state.social, make_key=True).digest(user) if user is not None else None
    rows = []
    for path in files:
        row: dict[str, Any] = {"file": str(path), "model": personal_model_name(settings), "user": user, "group": group}
        try:
            probe_within_limits(path, settings.ingest)
            item = extract_track_or_problem(path.stem, str(path), features)
        except AudioProblem as problem:
            item = {"reason": problem.reason, "detail": problem.detail}
        if isinstance(item, dict):
            rows.append({**row, "level": None, "labels": [], "scores": "{}", "problem": f"{item['reason']}: {item['detail']}"})
            continue
        stacked = np.stack([item.maps[m] for m in scorer.contract.stored_maps], axis=1)
        scores, level = model.predict(scorer.embed(stacked).mean(axis=0, keepdims=True), listener=listener, group=group)
        top = [MOODS[j] for j in np.argsort(-scores[0], kind="stable")[: settings.labels.top_k]]
        rows.append({**row, "level": level, "labels": top,
                     "scores": json.dumps(dict(zip(MOODS, scores[0].round(4).tolist(), strict=True))), "problem": None})
    return pd.DataFrame(rows)


def playlist(settings: ChorusSettings, mood: str, k: int = 20, user: str | None = None,
             group: str | None = None) -> tuple[pd.DataFrame, str]:
    """The ``k`` catalogue tracks ``user`` (or ``group``) would most hear as ``mood``: one matrix
    product of the stored catalogue embeddings with that listener's head; and the level that
    answered."""
    from chorus.errors import InputError

    if mood not in MOODS:
        raise InputError(mood, f"not one of the moods: {', '.join(MOODS)}")
    state = StateDir(settings.state_dir)
    path = state.personal / EMBEDDINGS_FILE
    if not path.exists():
        raise InputError(str(path), "no personalised model", "run `chorus personal` (or `chorus run`) first")
    model = load_personal_model(state.personal)
    stored = read_table(path)
    listener = forgotten_users(state.social, make_key=True).digest(user) if user is not None else None
    head, level = model.head(listener, group)
    scores = np.clip(model.design(np.stack(stored["embedding"].to_numpy())) @ head[:, MOODS.index(mood)], 0.0, 1.0)
    order = np.argsort(-scores, kind="stable")[:k]
    uris = load_tracks(settings).set_index("track_id")["uri"]
    ranked = pd.DataFrame({"rank": np.arange(1, len(order) + 1), "track_id": stored["track_id"].to_numpy()[order],
                           "score": scores[order].round(4)})
    ranked["title"] = [Path(str(uris.get(t, t))).stem for t in ranked["track_id"]]
    return ranked, level
