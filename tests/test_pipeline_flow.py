"""The whole pipeline under Prefect's test harness on a tiny corpus; a re-run does no new work."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from chorus.config import load_settings
from chorus.errors import InputError
from chorus.state import StateDir
from conftest import TINY_DEMO

pytestmark = pytest.mark.slow


def _overrides(state_dir, **train):
    return {
        "state_dir": str(state_dir),
        "demo": TINY_DEMO,
        "features": {"shard_size": 5}, "compute": {"workers": 2},
        "train": {"epochs": 2, "channels": [8, 16], "batch_size": 16, "backbone": {"epochs": 1, "channels": [8, 16],
                                                                                "corpus_tracks_per_style": 8},
                  "svm": {"budget": 4, "particles": 2}, "hashing": {"maps_per_layer": 4}, **train},
        # the tiny test split (2 tracks) rarely lets the gate promote: index the challengers
        "search": {"alias": "challenger"},
        "melody": {"queries_per_track": 1},
    }


@pytest.fixture(scope="module")
def first_run(prefect_harness, tmp_path_factory):
    from chorus_flows.pipeline import pipeline

    state_dir = tmp_path_factory.mktemp("state")
    settings = load_settings(overrides=_overrides(state_dir))
    summary = pipeline(settings=settings)
    return settings, summary


def test_backbone_pretrains_on_its_own_corpus_without_held_out_works(first_run):
    from mlflow import MlflowClient

    settings, summary = first_run
    state = StateDir(settings.state_dir)
    main = pd.read_csv(state.demo / "manifest.csv")
    pretext = pd.read_csv(state.pretext / "data" / "demo" / "manifest.csv")
    assert len(pretext) == 16 > (main["split"] == "train").sum()  # larger than the main train split
    held_out = set(main.loc[main["split"] != "train", "work"])
    assert held_out and not held_out & set(pretext["work"])
    counts = summary["pretrain"]["counts"]
    assert counts["pretext_corpus"]["excluded_works"] == len(held_out)
    assert counts["pretext_corpus"]["extracted_tracks"] == 16
    run = MlflowClient(settings.tracking_uri).get_run(summary["pretrain"]["counts"]["candidates"]["backbone"]["run_id"])
    assert run.data.params["pretext.tracks"] == "16" and run.data.params["backbone.corpus"] == "rendered"
    # the backbone's validation is the pretext corpus's own valid split, by work
    assert summary["pretrain"]["counts"]["candidates"]["backbone"]["n_valid_segments"] > 0


def _alias(settings, alias, name="chorus-style"):
    from chorus import registry

    registry.configure(settings.tracking_uri)
    return registry.alias_version(name, alias)


def _versions(settings):
    from mlflow import MlflowClient

    from chorus import registry

    registry.configure(settings.tracking_uri)
    return sorted(int(v.version) for v in MlflowClient().search_model_versions(f"name = '{settings.train.model_name}'"))


def test_every_output_exists_and_agrees(first_run):
    settings, summary = first_run
    state = StateDir(settings.state_dir)
    manifest = pd.read_csv(state.demo / "manifest.csv")
    tracks = pd.read_parquet(state.tracks)
    quarantine = pd.read_parquet(state.quarantine / "ingest.parquet")
    assert len(tracks) + len(quarantine) == len(manifest)
    assert len(tracks) == 12

    for name in ("users", "follows", "playlists", "playlist_tracks"):
        assert len(pd.read_parquet(state.social / f"{name}.parquet")) == len(pd.read_csv(state.demo / "social" / f"{name}.csv"))
    assert (state.data_docs / "index.html").exists()

    feature_index = json.loads(open(summary["features"]["outputs"]["index"]).read())
    assert len(feature_index["shards"]) == 3  # 12 tracks, 5 per shard
    segment_ids = pd.concat(pq.read_table(state.features / feature_index["config_hash"] / s, columns=["track_id"]).to_pandas()
                            for s in feature_index["shards"])
    assert set(segment_ids["track_id"]) == set(tracks["track_id"])

    labels = pd.read_parquet(state.labels / "labels.parquet")
    members = pd.read_parquet(state.social / "playlist_tracks.parquet")
    glob = labels[labels["scope"] == "global"]
    assert set(glob["track_id"]) <= set(members["track_id"]) and len(glob) > 0
    scopes = set(labels["scope"].str.split(":").str[0])
    assert scopes == {"global", "group", "user"}
    assert labels.groupby("scope")["track_id"].apply(lambda t: t.is_unique).all()
    assert (state.quarantine / "social-rejects.parquet").exists()

    metrics = json.loads((state.reports / "metrics.json").read_text())
    trained = summary["train"]["counts"]["candidates"]
    assert set(trained) == {"paper_cnn", "short_chunk", "mood_tagger", "backbone", "crnnh_32", "mfcc_svm_pso", "musicnn_msd",
                            "musicnn_mtt", "musicnn_probe", "musicnn_mood_probe"}
    # the pretrained taggers serve as registered: the gate has no labels of their 50 tags to judge them by
    assert trained["musicnn_msd"]["registered"] == "chorus-musicnn-msd" and trained["musicnn_msd"]["champion"] == 1
    style = {k: r for k, r in trained.items() if r["registered"] == "chorus-style"}
    # the challenger is this run's best-validated style candidate; the gate decided on it
    challenger = max(style.values(), key=lambda r: r["valid_score"])["version"]
    assert trained["paper_cnn"]["challenger"] == challenger
    decision = summary["promote"]["counts"]["decisions"]["chorus-style"]
    assert decision["challenger"] == challenger and decision["champion"] is None and decision["trigger"] == "pipeline"
    champion = _alias(settings, "champion")
    assert champion == (challenger if decision["promote"] else None)
    audit = [json.loads(line) for line in (state.audit / "promotions.jsonl").read_text().splitlines()]
    assert {r["model"] for r in audit} == {"chorus-style", "chorus-mood", "chorus-hash-32"}
    model_metrics = metrics["models"]["chorus-style"]
    assert model_metrics["task"] == "style" and 0.0 <= model_metrics["accuracy"] <= 1.0
    assert model_metrics["version"] == (champion or challenger)
    for name in ("paper_cnn", "short_chunk", "mfcc_svm_pso", "mood_tagger", "crnnh_32", "musicnn_probe", "musicnn_mood_probe"):
        low, high = metrics["candidates"][name]["value"]["ci"]
        assert low <= metrics["candidates"][name]["value"]["mean"] <= high
    assert metrics["candidates"]["mood_tagger"]["metric"] == "macro PR-AUC"
    assert "planted_mood" in metrics["candidates"]["mood_tagger"]
    assert metrics["candidates"]["crnnh_32"]["bits"] == 32
    report = (state.reports / f"chorus-style-v{champion or challenger}" / "report.html").read_text()
    assert "Candidates" in report and "mfcc_svm_pso" in report and "promotion" in report
    assert "crnnh_32 Hamming" in report and "LSH 32-bit" in report and "distortion rate" in report
    assert "<h2>Promotion</h2>" in report and f"challenger v{challenger}" in report
    assert "data:image/png;base64," in report and "http://" not in report and "https://" not in report
    voting = metrics["voting"]
    assert {"personal", "global", "random", "most_popular"} <= set(voting["schemes"])
    assert "held-out-tags protocol" in report and "personal - global" in report
    assert _versions(settings) == [1, 2, 3, 4]


def test_search_index_finds_tracks_from_degraded_copies_and_answers_the_cli(first_run, tmp_path):
    from chorus.search import SearchIndex
    from conftest import run_chorus

    settings, summary = first_run
    state = StateDir(settings.state_dir)
    built = summary["index"]
    assert not built["skipped"] and built["counts"]["tracks"] == 12 and built["counts"]["bits"] == 32
    index = SearchIndex.load(built["outputs"]["index"])
    challenger = _alias(settings, "challenger")
    assert index.meta["semantic"]["name"] == "chorus-style" and index.meta["semantic"]["version"] == challenger
    assert index.meta["hash"] == {"name": "chorus-hash-32", "version": _alias(settings, "challenger", "chorus-hash-32"),
                                  "candidate": "crnnh_32"}
    assert sorted(index.track_ids) == sorted(pd.read_parquet(state.tracks)["track_id"])
    # every track was queried with its three degraded copies in every mode (the >= 80% behaviour
    # is tested on the demo corpus in test_search_demo.py; 12 tracks make top 10 trivial)
    check = index.meta["check"]
    assert check["tracks"] == 12 and set(check["found_in_top_k"]) == {"hash", "semantic", "rerank"}
    assert all(set(v) == {"excerpt", "noise", "gain"} for v in check["found_in_top_k"].values())
    # named for what it is, and reported for the held-out (test) tracks alone beside the whole corpus
    test_tracks = (pd.read_parquet(state.tracks)["split"] == "test").sum()
    assert check["what"].startswith("near-duplicate") and check["held_out"]["tracks"] == test_tracks > 0
    subject = json.loads((state.reports / "metrics.json").read_text())["models"]["chorus-style"]["version"]
    report = (state.reports / f"chorus-style-v{subject}" / "report.html").read_text()
    assert "Similar-song search" in report and "crnnh_32 Hamming top 100 -&gt; cosine" in report
    assert json.loads((state.reports / f"chorus-style-v{subject}" / "metrics.json").read_text())["search"]["check"] == check

    # the CLI, by track id prefix and by audio file, in a fresh process
    track = index.track_ids[0]
    audio = pd.read_parquet(state.tracks).set_index("track_id").loc[index.track_ids[1], "uri"]
    out = tmp_path / "hits.parquet"
    done = run_chorus("--state-dir", str(state.root), "--set", "search.alias=challenger", "--set", f"export_root={tmp_path}",
                      "search", "--like", track[:8], "--like", audio, "--k", "4", "--mode", "semantic", "--out", str(out),
                      cwd=tmp_path, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"like {track[:8]} (semantic" in done.stdout and "results:" in done.stdout
    hits = pd.read_parquet(out)
    by_id, by_file = hits[hits["like"] == track[:8]], hits[hits["like"] == audio]
    assert len(by_id) == 4 and track not in set(by_id["track_id"]) and by_id["cosine"].is_monotonic_decreasing
    assert by_file["track_id"].iloc[0] == index.track_ids[1] and by_file["cosine"].iloc[0] > 0.99
    assert {"style", "voted_moods", "hamming"} <= set(hits.columns)
    bad = run_chorus("--state-dir", str(state.root), "--set", "search.alias=challenger", "search", "--like", "no-such-track",
                     cwd=tmp_path, timeout=240)
    assert bad.returncode != 0 and "no-such-track: neither an audio file nor a track id" in bad.stderr + bad.stdout


def test_melody_index_finds_a_hummed_demo_track_and_the_cli_answers(first_run, tmp_path):
    from chorus.melody.align import align
    from chorus.melody.index import MelodyIndex, melodies_from_table
    from chorus.melody.synth import LEVELS, hum_query
    from conftest import run_chorus, write_wav

    settings, summary = first_run
    state = StateDir(settings.state_dir)
    assert not summary["melody"]["skipped"] and summary["melody"]["counts"]["scores"] == 12
    tracks = pd.read_parquet(state.tracks)
    index = MelodyIndex.load(state.melody_index)
    quarantine = pd.read_parquet(state.melody / "quarantine.parquet")
    # nothing disappears: every track is in the index or quarantined with its reason
    assert set(index.track_ids) | set(quarantine["track_id"]) == set(tracks["track_id"])
    assert not set(index.track_ids) & set(quarantine["track_id"])
    assert quarantine["reason"].str.len().gt(0).all()
    melodies = pd.read_parquet(state.melody / "melodies.parquet")
    assert set(melodies["source"]) == {"audio", "score"}  # the demo's scores are kept beside the transcriptions
    judged = json.loads((state.reports / "melody.json").read_text())
    assert judged["catalogue"] == len(index) and judged["transcription"]["n"] == 12
    subject = json.loads((state.reports / "metrics.json").read_text())["models"]["chorus-style"]["version"]
    assert "Find a song by its tune" in (state.reports / f"chorus-style-v{subject}" / "report.html").read_text()

    # the indexed track whose transcribed melody follows its score best, sung from its score
    scores = melodies_from_table(melodies[melodies["source"] == "score"])
    track = min((t for t in index.track_ids if len(scores.get(t, [])) >= 8),
                key=lambda t: align(scores[t], index.melodies[t])[0])
    query = hum_query(scores[track], track, LEVELS["clean"], np.random.default_rng(0), min_notes=8)
    wav = write_wav(tmp_path / "hum.wav", query.audio, sr=22050)
    done = run_chorus("--state-dir", str(state.root), "hum", str(wav), "--k", "3", "--json", cwd=tmp_path, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["matches"][0]["track_id"] == track and len(found["matches"]) == 3
    assert [m["rank"] for m in found["matches"]] == [1, 2, 3]


def test_the_personalised_model_tags_for_a_listener_and_ranks_a_playlist(first_run, tmp_path):
    from chorus.stages.personal import playlist
    from conftest import run_chorus

    settings, summary = first_run
    state = StateDir(settings.state_dir)
    counts = summary["personal"]["counts"]
    users = len(pd.read_parquet(state.social / "users.parquet"))
    assert not summary["personal"]["skipped"] and counts["version"] >= 1 and counts["listeners"] == users
    described = json.loads((state.personal / "personal.json").read_text())
    assert described["listeners"] == users and len(described["listeners_sha256"]) == 64
    user = pd.read_parquet(state.social / "users.parquet")["user_id"].iloc[0]
    audio = pd.read_parquet(state.tracks)["uri"].iloc[0]
    out = tmp_path / "moods.parquet"
    done = run_chorus("--state-dir", str(state.root), "--set", f"export_root={tmp_path}", "tag", audio, "--user", user,
                      "--out", str(out), cwd=tmp_path, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"as user {user}" in done.stdout and "answered by" in done.stdout
    row = pd.read_parquet(out).iloc[0]
    assert row["level"] in ("listener", "group") and len(row["labels"]) == settings.labels.top_k
    ranked, level = playlist(settings, "sadness", 5, user=user)
    assert len(ranked) == 5 and ranked["score"].is_monotonic_decreasing and level in ("listener", "group")


def test_registered_champion_reproduces_recorded_accuracy(first_run):
    import mlflow

    from chorus import registry
    from chorus.features import load_features, map_names
    from chorus.training import track_mean

    settings, _ = first_run
    state = StateDir(settings.state_dir)
    registry.configure(settings.tracking_uri)
    alias = "champion" if _alias(settings, "champion") else "challenger"
    served = mlflow.pyfunc.load_model(f"models:/chorus-style@{alias}")  # as a user would load it
    labels = registry.load_scorer("chorus-style", alias).contract.labels
    tracks = pd.read_parquet(state.tracks)
    test = tracks[tracks["split"] == "test"]
    features = load_features(state.features, settings.features, test["track_id"].tolist(), maps=map_names(settings.features))
    track_ids, scores = track_mean(served.predict(features.stacked()), features.segments["track_id"].to_numpy())
    truth = pd.Series(track_ids).map(dict(zip(test["track_id"], test["style"], strict=True)))
    accuracy = float(np.mean(np.asarray(labels)[scores.argmax(1)] == truth.to_numpy()))
    recorded = json.loads((state.reports / "metrics.json").read_text())["models"]["chorus-style"]["accuracy"]
    assert accuracy == pytest.approx(recorded)


def test_second_run_does_no_new_work(first_run):
    from chorus_flows.pipeline import pipeline

    settings, _ = first_run
    state = StateDir(settings.state_dir)
    champion = json.loads((state.reports / "metrics.json").read_text())["models"]["chorus-style"]["version"]
    watched = sorted(state.features.rglob("*.parquet")) + sorted(state.melody.glob("*.parquet")) + [
        state.tracks, state.labels / "labels.parquet",
                                                         state.reports / f"chorus-style-v{champion}" / "report.html"]
    before = {p: p.stat().st_mtime_ns for p in watched}
    summary = pipeline(settings=settings)
    assert summary["ingest"]["demo"]["skipped"] and summary["ingest"]["ingest"]["skipped"]
    for stage in ("features", "labels", "melody", "pretrain", "train", "promote", "index", "evaluate"):
        assert summary[stage]["skipped"], stage
    assert {p: p.stat().st_mtime_ns for p in watched} == before
    assert _versions(settings) == [1, 2, 3, 4]


def test_changed_training_setting_redoes_only_training(first_run):
    from chorus_flows.pipeline import pipeline

    settings, _ = first_run
    champion = _alias(settings, "champion")
    changed = load_settings(overrides=_overrides(settings.state_dir, epochs=3))
    summary = pipeline(settings=changed)
    assert summary["features"]["skipped"] and summary["labels"]["skipped"] and summary["pretrain"]["skipped"]
    assert not summary["train"]["skipped"] and not summary["evaluate"]["skipped"]
    trained = summary["train"]["counts"]["candidates"]
    # the CNNs read train.epochs and retrain; the SVM baseline and the backbone do not
    assert not trained["paper_cnn"]["skipped"] and not trained["short_chunk"]["skipped"]
    assert trained["mfcc_svm_pso"]["skipped"] and trained["backbone"]["skipped"] and trained["musicnn_probe"]["skipped"]
    assert _versions(settings) == [1, 2, 3, 4, 5, 6]
    # the new challenger went through the gate against the champion
    decision = summary["promote"]["counts"]["decisions"]["chorus-style"]
    assert decision["challenger"] == trained["paper_cnn"]["challenger"] and decision["champion"] == champion
    assert _alias(settings, "champion") == (decision["challenger"] if decision["promote"] else champion)


def test_forgetting_a_user_removes_their_rows_and_recomputes_labels(first_run):
    from chorus import stages

    settings, _ = first_run
    state = StateDir(settings.state_dir)
    playlists = pd.read_parquet(state.social / "playlists.parquet")
    user = playlists["owner"].value_counts().index[0]
    before = pd.read_parquet(state.labels / "labels.parquet")
    listeners = pd.read_parquet(state.personal / "listeners.parquet")["listener"]
    result = stages.forget_user_stage(settings, user)
    assert result["dropped"]["users"] == 1 and result["dropped"]["playlists"] >= 1
    # the personalised model's row of this listener is gone at once (keyed by the same keyed digest)
    from chorus.ingest import forgotten_users

    digest = forgotten_users(state.social).digest(user)
    assert digest in set(listeners) and result["personal_model_row_removed"]
    assert digest not in set(pd.read_parquet(state.personal / "listeners.parquet")["listener"])
    assert not result["labels"]["skipped"]
    for name, column in (("users", "user_id"), ("playlists", "owner"), ("follows", "follower"), ("follows", "followee")):
        assert user not in set(pd.read_parquet(state.social / f"{name}.parquet")[column])
    after = pd.read_parquet(state.labels / "labels.parquet")
    assert f"user:{user}" not in set(after["scope"])
    assert not after.equals(before)
    assert user not in (state.social / "forgotten.json").read_text()  # kept only as a keyed digest
    assert hashlib.sha256(str(user).encode()).hexdigest() not in (state.social / "forgotten.json").read_text()
    assert (state.social / "forgotten.key").stat().st_mode & 0o077 == 0
    # a later ingest of the unchanged source keeps them out and is a no-op
    again = stages.ingest_stage(settings)
    assert again.skipped
    assert user not in set(pd.read_parquet(state.social / "users.parquet")["user_id"])
    # a new key: the user is matched in the source and carried over; ingest is still a no-op
    old_key = (state.social / "forgotten.key").read_text()
    assert stages.rekey_forgotten_stage(settings) == {"rekeyed": 1, "retired": 0}
    assert (state.social / "forgotten.key").read_text() != old_key
    assert stages.ingest_stage(settings).skipped
    assert user not in set(pd.read_parquet(state.social / "users.parquet")["user_id"])


def test_voted_labels_feed_training(first_run):
    from chorus import MOODS, stages

    settings, _ = first_run
    tracks = stages.training_tracks(settings)
    labels = pd.read_parquet(StateDir(settings.state_dir).labels / "labels.parquet")
    glob = labels[labels["scope"] == "global"].set_index("track_id")
    voted = tracks.dropna(subset=["voted_mood"]).set_index("track_id")["voted_mood"]
    assert len(voted) == len(glob)
    top = glob[[f"score_{m}" for m in MOODS]].to_numpy().argmax(axis=1)
    assert voted.loc[glob.index].tolist() == [MOODS[j] for j in top]
    # the trainer accepts it as a task: its key changes when the voted labels do
    voted_settings = settings.model_copy(update={"train": settings.train.model_copy(update={"task": "voted_mood"})})
    assert stages.train_key(voted_settings, tracks) != stages.train_key(settings, tracks)


def test_each_candidate_is_a_complete_mlflow_run(first_run):
    from mlflow import MlflowClient

    from chorus import registry

    settings, summary = first_run
    registry.configure(settings.tracking_uri)
    client = MlflowClient()
    trained = summary["train"]["counts"]["candidates"]
    cnn = client.get_run(trained["short_chunk"]["run_id"])
    assert cnn.info.status == "FINISHED"
    assert cnn.data.params["candidate"] == "short_chunk" and cnn.data.params["train.epochs"] == "2"
    assert [m.step for m in client.get_metric_history(cnn.info.run_id, "train_loss")] == [1, 2]  # every epoch
    artifacts = {a.path for a in client.list_artifacts(cnn.info.run_id, "provenance")}
    assert {"provenance/config.json", "provenance/labels.json", "provenance/provenance.json",
            "provenance/training_curves.png"} <= artifacts
    svm = client.get_run(trained["mfcc_svm_pso"]["run_id"])
    assert float(svm.data.params["candidate.cv_accuracy"]) >= 0 and "valid_score" in svm.data.metrics
    tags = registry.version_tags("chorus-style", trained["short_chunk"]["version"])
    assert tags[registry.CANDIDATE_TAG] == "short_chunk" and tags["chorus.feature_config_hash"]


def test_promotion_gate_dry_run_and_unscorable_champion(first_run):
    """A dry run moves nothing; a champion trained on other features is judged unscorable and
    the decision says why."""
    from chorus import promotion, registry, stages
    from chorus.features import load_features, map_names

    settings, _ = first_run
    state = StateDir(settings.state_dir)
    registry.configure(settings.tracking_uri)
    challenger = _alias(settings, "challenger")
    stale = registry.load_scorer("chorus-style", challenger)
    stale.contract.feature_config_hash = "features-of-another-configuration"
    example = load_features(state.features, settings.features, None, maps=map_names(settings.features)).stacked()[:2]
    ref = registry.log_candidate(stale, "chorus-style", "stale-key", {"candidate": stale.contract.candidate}, [], {}, {},
                                 input_example=example)
    registry.set_alias("chorus-style", "champion", ref.version)
    registry.set_alias("chorus-style", "challenger", challenger)
    rows_before = len(promotion.read_audit(state.audit / "promotions.jsonl"))

    dry = stages.promote_stage(settings, dry_run=True, names=["chorus-style"]).counts["decisions"]["chorus-style"]
    assert dry["dry_run"] and "cannot be scored" in dry["reason"] and "StaleFeaturesError" in dry["reason"]
    assert _alias(settings, "champion") == ref.version  # nothing moved

    real = stages.promote_stage(settings, names=["chorus-style"]).counts["decisions"]["chorus-style"]
    assert _alias(settings, "champion") == (challenger if real["promote"] else ref.version)
    assert real["split"] == "valid"
    rows = promotion.read_audit(state.audit / "promotions.jsonl")[rows_before:]
    assert [r["dry_run"] for r in rows] == [True, False]
    again = stages.promote_stage(settings, names=["chorus-style"]).counts["decisions"]["chorus-style"]
    assert not again["decided"]  # decided once against this champion


def test_the_gate_never_reads_the_test_split(first_run, monkeypatch):
    """Selection never touches the test split: every segment the gate loads is a valid-split
    track's, for challenger and champion alike, and the decision says valid decided."""
    import importlib

    from chorus import registry, stages

    features_module = importlib.import_module("chorus.stages.inputs")  # where the gate's FeatureSets load

    settings, _ = first_run
    registry.configure(settings.tracking_uri)
    tracks = stages.training_tracks(settings)
    split_of = dict(zip(tracks["track_id"], tracks["split"], strict=True))
    loaded: list[str] = []
    real_load = features_module.load_features

    def recording_load(root, feature_settings, track_ids=None, maps=None):
        features = real_load(root, feature_settings, track_ids, maps=maps)
        loaded.extend(features.segments["track_id"])
        return features

    monkeypatch.setattr(features_module, "load_features", recording_load)
    champion = _alias(settings, "champion")
    registry.set_alias("chorus-style", "challenger", champion - 1 if champion and champion > 1 else 1)
    decision = stages.promote_stage(settings, dry_run=True, names=["chorus-style"]).counts["decisions"]["chorus-style"]
    assert decision["decided"] and decision["split"] == "valid"
    assert loaded and {split_of[t] for t in loaded} == {"valid"}


def _served_alias(settings):
    return "champion" if _alias(settings, "champion") else "challenger"


def test_tag_files_gives_the_models_predictions_on_the_stored_features(first_run, tmp_path):
    from chorus import stages
    from chorus.training import track_mean

    settings, _ = first_run
    state = StateDir(settings.state_dir)
    tracks = pd.read_parquet(state.tracks)
    test = tracks[tracks["split"] == "test"]
    alias = "challenger"  # a version chorus trained (an earlier test made a stale one champion)
    with pytest.raises(InputError, match="outside where chorus may write"):
        stages.tag_stage(settings, test["uri"].tolist(), alias=alias, out=str(tmp_path / "tags.parquet"))
    # never over the pipeline's own tables, even with export_root at the state directory
    for owned in (state.labels / "labels.parquet", state.tracks):
        before = owned.read_bytes()
        with pytest.raises(InputError, match="never over the pipeline's own files"):
            stages.tag_stage(settings.model_copy(update={"export_root": state.root}), test["uri"].tolist(), alias=alias,
                             out=str(owned))
        assert owned.read_bytes() == before
    out = state.root.resolve() / "exports" / "tags.parquet"
    summary = stages.tag_stage(settings, test["uri"].tolist() + [str(tmp_path)], alias=alias, out=str(out))
    assert summary.counts["files"] == len(test) and summary.outputs["predictions"] == str(out)
    tagged = pd.read_parquet(out)
    assert tagged["problem"].isna().all() and (tagged["segments"] > 0).all()
    # a file beyond ingest's limits is not decoded: its row says which limit it broke
    short_limit = settings.model_copy(update={"ingest": settings.ingest.model_copy(update={"max_duration_s": 1.0})})
    limited = pd.read_parquet(stages.tag_stage(short_limit, test["uri"].tolist()[:1], alias=alias).outputs["predictions"])
    assert limited["problem"].iloc[0].startswith("too_long: ") and limited["segments"].iloc[0] == 0

    from chorus import registry
    from chorus.features import load_features, map_names

    scorer = registry.load_scorer("chorus-style", alias)
    features = load_features(state.features, settings.features, test["track_id"].tolist(), maps=map_names(settings.features))
    ids, scores = track_mean(scorer.scores(features.stacked()), features.segments["track_id"].to_numpy())
    stored = dict(zip(ids, [scorer.contract.labels[j] for j in scores.argmax(1)], strict=True))
    by_file = dict(zip(test["uri"], test["track_id"], strict=True))
    for row in tagged.itertuples():
        assert list(row.labels) == [stored[by_file[row.file]]]


def test_reading_a_models_feature_settings_leaves_no_download_behind(first_run, tmp_path, monkeypatch):
    """Tagging, drift and search read a version's recorded feature settings on every call: the
    artifact fetched from its run must not pile up in the system's temporary folder."""
    import tempfile

    from chorus.tagging import model_feature_settings

    settings, _ = first_run
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    version = _alias(settings, "challenger")  # a version chorus trained (an earlier test made a stale one champion)
    assert model_feature_settings("chorus-style", version).sample_rate > 0
    assert list(scratch.iterdir()) == []


def test_the_pretrained_tagger_hears_metal_in_a_metal_song(first_run, tmp_path):
    """`chorus tag song --model chorus-musicnn-msd` out of the box: real tags for real music (the
    metal clip of tests/fixtures, from fretsonfire-songs-muldjord, CC BY-SA 3.0)."""
    import soundfile as sf

    from chorus import stages

    settings, _ = first_run
    with np.load(Path(__file__).parent / "fixtures" / "musicnn_reference.npz") as reference:
        sf.write(tmp_path / "metal.wav", reference["audio"][0], 16000)
    summary = stages.tag_stage(settings.model_copy(update={"export_root": tmp_path}), [str(tmp_path / "metal.wav")],
                               model="chorus-musicnn-msd", out=str(tmp_path / "tags.parquet"))
    tagged = pd.read_parquet(summary.outputs["predictions"])
    assert tagged.loc[0, "problem"] is None and len(tagged.loc[0, "labels"]) == 5
    assert tagged.loc[0, "labels"][0] == "metal"
    assert json.loads(tagged.loc[0, "scores"])["metal"] > 0.5


def test_mlflow_models_serve_answers_with_the_same_predictions(first_run):
    """`mlflow models serve -m models:/chorus-style@<alias>` on 127.0.0.1, scored over HTTP."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    import mlflow

    from chorus.features import load_features, map_names

    settings, _ = first_run
    state = StateDir(settings.state_dir)
    alias = _served_alias(settings)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    import os

    # mlflow execs `uvicorn` by name: the venv's bin must be on PATH (as with an activated venv)
    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.tracking_uri,
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/chorus-style@{alias}",
                               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()[-2000:]
                assert time.time() < deadline, "server did not become healthy"
                time.sleep(1)
        x = load_features(state.features, settings.features, None, maps=map_names(settings.features)).stacked()[:3]
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps({"inputs": x.tolist()}).encode(),
                                         headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())["predictions"]
        expected = mlflow.pyfunc.load_model(f"models:/chorus-style@{alias}").predict(x)
        np.testing.assert_allclose(np.asarray(answer), expected, rtol=1e-5, atol=1e-6)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_report_renders_in_headless_chromium_offline(first_run):
    """The report opens in Debian's chromium with no console error and no request but itself."""
    import shutil

    from playwright.sync_api import sync_playwright

    settings, _ = first_run
    state = StateDir(settings.state_dir)
    version = json.loads((state.reports / "metrics.json").read_text())["models"]["chorus-style"]["version"]
    report = state.reports / f"chorus-style-v{version}" / "report.html"
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: `make test` installs it (infra/local/install-system-packages.sh --test)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        problems, requests = [], []
        page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(report.as_uri())
        page.wait_for_load_state("networkidle")
        images = page.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
        headings = page.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
        browser.close()
    assert problems == []
    assert [u for u in requests if not u.startswith("data:")] == [report.as_uri()]
    assert images and all(images)
    assert {"What was evaluated", "Candidates", "Confusion matrix"} <= set(headings)


def test_prefect_cache_follows_the_data_on_disk(first_run):
    """The voted-labels task is cached by its input key while its outputs are on disk: a re-run
    is a cache hit; once the output is deleted there is no key, and the task recomputes it."""
    from prefect import flow

    from chorus_tasks.labels import voted_labels

    settings, _ = first_run
    labels_path = StateDir(settings.state_dir).labels / "labels.parquet"

    @flow
    def labels_twice() -> list[str]:
        return [voted_labels(settings, return_state=True).name for _ in range(2)]

    assert labels_twice()[1] == "Cached"
    before = pd.read_parquet(labels_path)
    labels_path.unlink()
    states = labels_twice()
    assert states[0] == "Completed"  # no key without the output: it ran
    pd.testing.assert_frame_equal(pd.read_parquet(labels_path), before)
    assert states[1] == "Cached"


def test_every_reported_model_has_a_card_a_reviewer_can_read(first_run):
    """The report links its model's card; a card says what the model is for, what it saw
    (tracks per class and split), how it does on test per class and per slice, where it fails
    (track ids), where it came from and what the gate decided; markdown goes to MLflow."""
    import shutil

    from mlflow import MlflowClient
    from playwright.sync_api import sync_playwright

    from chorus import registry, stages

    settings, _ = first_run
    state = StateDir(settings.state_dir)
    version = json.loads((state.reports / "metrics.json").read_text())["models"]["chorus-style"]["version"]
    report = state.reports / f"chorus-style-v{version}" / "report.html"
    assert f'href="../cards/chorus-style-v{version}.html"' in report.read_text()
    # and the card of every candidate its evaluation scored, each a page on disk
    scored = json.loads((report.parent / "metrics.json").read_text())["candidates"]
    evaluated = {(c["registered"], c["version"]) for c in scored.values()}
    assert len(evaluated) >= 4
    for name, number in evaluated:
        assert f'href="../cards/{name}-v{number}.html"' in report.read_text()
        assert (state.reports / "cards" / f"{name}-v{number}.html").is_file()
    summary = stages.card_stage(settings, f"chorus-style/{version}")
    card = Path(summary.outputs["card"])
    assert card == state.reports / "cards" / f"chorus-style-v{version}.html"
    tracks = pd.read_parquet(state.tracks)
    test_ids = set(tracks.loc[tracks["split"] == "test", "track_id"])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page()
        problems, requests = [], []
        page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
        page.on("request", lambda r: requests.append(r.url))
        page.goto(report.as_uri())
        page.get_by_role("link", name=f"chorus-style v{version}").click()
        page.wait_for_load_state("load")
        assert page.url == card.as_uri()
        headings = page.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
        text = page.inner_text("body")
        browser.close()
    assert problems == [] and all(u.startswith("file:") for u in requests)
    assert ["Model", "Intended use", "Out of scope", "Training data", "Results on the test split", "Per class",
            "By duration", "By loudness", "By source", "Known failure cases", "Provenance", "Gate decisions"] == headings
    markdown = card.with_suffix(".md").read_text()
    wrong = [line.split("|")[1].strip() for line in markdown.split("## Known failure cases")[1].split("## ")[0].splitlines()
             if line.startswith("| ") and not line.startswith("| track id")]
    assert set(wrong) <= test_ids  # failure cases name test tracks only
    for style in tracks["style"].unique():
        assert f"| {style} |" in markdown.split("## Training data")[1].split("## ")[0]
    assert "decided on" in markdown and "| valid |" in markdown.split("## Gate decisions")[1]
    assert "MLflow run" in text and registry.run_id_of("chorus-style", version) in text
    run_id = registry.run_id_of("chorus-style", version)
    logged = [a.path for a in MlflowClient(settings.tracking_uri).list_artifacts(run_id, "card")]
    assert logged == [f"card/chorus-style-v{version}.md"]


def test_drift_watch_compares_new_audio_with_the_champions_training_tracks(first_run, tmp_path):
    """`chorus drift FILES`: the corpus's own held-out audio does not alarm, the same audio 40 dB
    quieter does (a handful of tracks: tests/test_drift.py shows 12 dB on a batch of 30); the
    report lands in reports/drift and Data Docs, the verdict in metrics.json."""
    import soundfile as sf

    from chorus import registry, stages

    settings, summary = first_run
    assert summary["drift"]["skipped"]  # the first run: every track is new, and no champion yet
    settings = settings.model_copy(update={"drift": settings.drift.model_copy(update={"min_tracks": 4})})
    state = StateDir(settings.state_dir)
    tracks = pd.read_parquet(state.tracks)
    held_out = tracks.loc[tracks["split"] != "train", "uri"].tolist()
    for i, uri in enumerate(held_out):
        y, sr = sf.read(uri, dtype="float32")
        sf.write(tmp_path / f"{i}.wav", y * 10 ** (-40 / 20), sr)
    registry.configure(settings.tracking_uri)
    champion = registry.alias_version("chorus-style", "champion")
    # a version chorus trained (an earlier test made a stale one champion)
    registry.set_alias("chorus-style", "champion", registry.alias_version("chorus-style", "challenger"))
    try:
        same = stages.drift_stage(settings, held_out)
        quieter = stages.drift_stage(settings, [str(tmp_path)])
    finally:
        if champion is not None:
            registry.set_alias("chorus-style", "champion", champion)
    assert not same.skipped and not same.counts["alarm"], same.counts
    assert quieter.counts["alarm"] and "level_db" in quieter.counts["drifted"]
    report = Path(quieter.outputs["report"])
    assert report.parent == state.reports / "drift" and "DRIFT" in report.read_text()
    assert (state.data_docs / "drift" / report.name).exists()
    recorded = json.loads((state.reports / "metrics.json").read_text())["drift"]
    assert recorded["alarm"] and recorded["report"] == str(report)
