"""Orchestration without servers: the flows' parameter forms, how a run's settings are resolved,
the deployments' schedules, failure records, and the order the local services stop in."""

from __future__ import annotations

import json

import pytest

from chorus.config import ChorusSettings, load_settings
from chorus_ops.environment import settings_env_name
from chorus_ops.services import LocalServices


def test_every_flow_parameter_is_typed_and_described():
    """What the Prefect UI's run form shows: a type and a description for each parameter."""
    from chorus_ops.deployments import ON_DEMAND

    for flow in ON_DEMAND:
        schema = flow.parameters.model_dump()
        assert "settings" in schema["properties"], flow.name
        for name, prop in schema["properties"].items():
            assert prop.get("description"), f"{flow.name}.{name} has no description"
            assert "anyOf" in prop or "type" in prop or "$ref" in prop or "allOf" in prop, f"{flow.name}.{name} untyped"
    ingest = next(f for f in ON_DEMAND if f.name == "ingest").parameters.model_dump()["properties"]
    assert {"type": "number"} in ingest["demo_scale"]["anyOf"]


def test_given_settings_are_laid_over_the_process_settings(monkeypatch, tmp_path):
    """A UI run that fills in one setting keeps the serving process's state directory and the rest."""
    from chorus_flows._common import resolve

    monkeypatch.setenv("CHORUS_STATE_DIR", str(tmp_path / "served"))
    monkeypatch.setenv("CHORUS_TRAIN__EPOCHS", "7")
    settings = resolve({"demo": {"scale": 0.5}})
    assert settings.state_dir == tmp_path / "served" and settings.train.epochs == 7 and settings.demo.scale == 0.5
    assert resolve(None).demo.scale == 1.0
    # a settings object built by a caller wins where it set something
    settings = resolve(ChorusSettings(train={"epochs": 3}))
    assert settings.train.epochs == 3 and settings.state_dir == tmp_path / "served"
    # a flow's typed parameters; None changes nothing
    changed = resolve(settings, {"demo.scale": 2.0, "train.epochs": None})
    assert changed.demo.scale == 2.0 and changed.train.epochs == 3



def test_a_deployment_run_cannot_redirect_where_the_server_reads_writes_and_sends_work(monkeypatch, tmp_path):
    """Anyone who can reach the Prefect API can start a deployment run: its settings parameter may
    tune the work, not point it at another tracking server, Dask scheduler, state or scheme."""
    from chorus.errors import ConfigError
    from chorus_flows import _common

    monkeypatch.setenv("CHORUS_STATE_DIR", str(tmp_path / "served"))
    monkeypatch.setattr(_common, "_in_deployment_run", lambda: True)
    assert _common.resolve({"demo": {"scale": 0.5}}).demo.scale == 0.5
    # the server's own values, as a validated settings parameter carries them, are not a change
    assert _common.resolve(ChorusSettings(train={"epochs": 3})).train.epochs == 3
    for given in ({"mlflow_tracking_uri": "http://elsewhere:5000"}, {"compute": {"address": "tcp://elsewhere:8786"}},
                  {"ingest": {"allowed_schemes": ["file", "http"]}}, {"state_dir": "/tmp/elsewhere"},
                  {"orchestration": {"deployment_may_set": ["state_dir"]}}):
        with pytest.raises(ConfigError, match="the server's to set"):
            _common.resolve(given)
    monkeypatch.setenv("CHORUS_ORCHESTRATION__DEPLOYMENT_MAY_SET", '["compute.address"]')
    assert _common.resolve({"compute": {"address": "tcp://other:8786"}}).compute.address == "tcp://other:8786"
    monkeypatch.setattr(_common, "_in_deployment_run", lambda: False)  # the CLI's own runs set what they like
    assert str(_common.resolve({"state_dir": "/tmp/elsewhere"}).state_dir) == "/tmp/elsewhere"

def test_config_file_of_the_serving_process(monkeypatch, tmp_path):
    from chorus_flows._common import resolve

    config = tmp_path / "chorus.yaml"
    config.write_text("state_dir: /srv/chorus\ndemo: {scale: 0.25}\n")
    monkeypatch.setenv("CHORUS_CONFIG", str(config))
    settings = resolve(None)
    assert str(settings.state_dir) == "/srv/chorus" and settings.demo.scale == 0.25


def test_deployments_follow_the_orchestration_settings():
    from chorus_ops.deployments import deployments

    settings = load_settings(overrides={"orchestration": {"timezone": "Europe/Berlin", "refresh_cron": "30 1 * * *",
                                                          "schedules_active": False}})
    by_name = {(d.flow_name, d.name): d for d in deployments(settings)}
    nightly = by_name[("pipeline", "nightly-refresh")]
    assert nightly.schedules[0].schedule.cron == "30 1 * * *"
    assert nightly.schedules[0].schedule.timezone == "Europe/Berlin"
    assert nightly.paused is True and nightly.parameters["stages"] == ["ingest", "features", "labels", "melody", "drift"]
    weekly = by_name[("pipeline", "weekly-retrain")]
    assert weekly.schedules[0].schedule.timezone == "Europe/Berlin"
    assert {"train", "personal", "promote", "evaluate"} <= set(weekly.parameters["stages"])
    flows = {flow for flow, name in by_name if name == "on-demand"}
    assert {"ingest", "features", "labels", "melody", "pretrain", "train", "personal", "promote", "index", "evaluate",
            "hum", "pipeline"} <= flows
    assert all(d.concurrency_limit == 1 and d.concurrency_options.collision_strategy == "ENQUEUE" for d in by_name.values())


def test_a_failed_flow_run_is_recorded(prefect_harness, tmp_path):
    """The on_failure hook writes the failure to <state>/audit/failures.jsonl (and the log)."""
    from prefect import flow

    from chorus_flows._common import FLOW_OPTIONS, SettingsParameter, resolve

    @flow(name="breaks", **FLOW_OPTIONS)
    def breaks(settings: ChorusSettings | None = SettingsParameter) -> None:
        resolve(settings)
        raise OSError("the disk is full")

    with pytest.raises(OSError):
        breaks(settings=load_settings(overrides={"state_dir": str(tmp_path)}))
    record = json.loads((tmp_path / "audit" / "failures.jsonl").read_text().splitlines()[-1])
    assert record["flow"] == "breaks" and record["state"] == "Failed"
    assert "the disk is full" in record["message"] and record["flow_run"].startswith("breaks · local · ")


def test_services_stop_in_reverse_start_order(tmp_path):
    """`down` stops in the reverse of this order: chorus serve, the workers, the scheduler, the
    Prefect server, MLflow (and PostgreSQL after them)."""
    services = LocalServices(load_settings(overrides={"state_dir": str(tmp_path)}))
    names = [s.name for s in services.services()]
    assert names == ["mlflow", "prefect-server", "dask-scheduler", "dask-worker-0", "dask-worker-1", "serve"]
    settings = load_settings(overrides={"state_dir": str(tmp_path), "services": {"serve": False, "dask_workers": 3}})
    assert [s.name for s in LocalServices(settings).services()][-1] == "dask-worker-2"
    env = services.endpoints.chorus_environment()
    assert env == {"CHORUS_PREFECT_API_URL": "http://127.0.0.1:4200/api", "CHORUS_MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
                   "CHORUS_COMPUTE__ADDRESS": "tls://127.0.0.1:8786"}
    assert load_settings(overrides={k.removeprefix("CHORUS_").lower(): v for k, v in env.items()
                                    if "__" not in k}).prefect_api_url == "http://127.0.0.1:4200/api"


def test_local_runs_skip_heartbeats_but_runs_on_a_server_keep_them(monkeypatch):
    """Prefect's run heartbeats cost ~1 s at the end of every flow and subflow; on the embedded
    API (which dies with the process) they detect nothing, so local runs skip them."""
    from prefect.settings import get_current_settings, temporary_settings

    from chorus_flows._common import HEARTBEAT_ENV, local_run

    monkeypatch.delenv(HEARTBEAT_ENV, raising=False)
    seen = []  # what a flow engine started there reads
    # Prefect's own defaults (the session's test harness turns heartbeats off around it)
    with temporary_settings(restore_defaults={"flows.heartbeat_frequency", "api.url"}):
        default = get_current_settings().flows.heartbeat_frequency
        assert default is not None  # Prefect's default: heartbeats on
        with local_run():
            seen.append(get_current_settings().flows.heartbeat_frequency)
        with temporary_settings(updates={"api.url": "http://127.0.0.1:4200/api"}), local_run():
            seen.append(get_current_settings().flows.heartbeat_frequency)
        monkeypatch.setenv(HEARTBEAT_ENV, "60")  # set explicitly: heartbeats as Prefect reads them
        with local_run():
            seen.append(get_current_settings().flows.heartbeat_frequency)
    assert seen == [None, default, default]


def test_time_limits_scale_with_the_work():
    from chorus.limits import shard_seconds, training_seconds

    settings = load_settings(overrides={"compute": {"workers": 2}, "orchestration": {"file_timeout_s": 10,
                                                                                         "epoch_timeout_s": 100}})
    assert shard_seconds(settings, 100) == 10 * 50 + 60 and shard_seconds(settings, 1) == 10 + 60
    assert training_seconds(settings, 20) == 100 * 20 + 120


@pytest.mark.slow
def test_a_task_past_its_time_limit_fails_the_run_with_a_clear_line_and_an_audit_record(tmp_path):
    """A stuck task cannot hold the state for ever: past orchestration.task_timeout_s it fails
    (after its retries), the command says so in one line, and the failure is audited."""
    import json

    from conftest import run_chorus, tone, write_wav

    for label in ("a", "b"):
        write_wav(tmp_path / "corpus" / label / f"{label}.wav", tone(3.0))
    state = tmp_path / "state"
    done = run_chorus("--state-dir", str(state), "--set", f"ingest.manifest={tmp_path / 'corpus'}",
                      "--set", "orchestration.task_timeout_s=0.01", "ingest", cwd=tmp_path, timeout=300)
    assert done.returncode != 0
    assert "exceeded timeout of 0.01 second" in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
    failures = [json.loads(line) for line in (state / "audit" / "failures.jsonl").read_text().splitlines()]
    assert failures[-1]["flow"] == "ingest" and "timeout" in failures[-1]["message"]


def test_served_runs_wait_for_the_state_lock_a_bounded_time(tmp_path):
    settings = load_settings(overrides={"state_dir": str(tmp_path), "orchestration": {"served_lock_timeout_s": 900}})
    serve = next(s for s in LocalServices(settings).services() if s.name == "serve")
    assert serve.env[settings_env_name("lock_timeout_s")] == "900.0"


def test_chorus_env_is_sourced_without_running_what_a_value_holds(tmp_path):
    """A state path with a command substitution or quotes in it is exported as written, and
    sourcing the file runs nothing."""
    import subprocess

    from chorus_ops.environment import shell_exports

    witness = tmp_path / "ran"
    hostile = f"/data/$(touch {witness})/it's \"here\""
    env_file = tmp_path / "chorus.env"
    env_file.write_text(shell_exports({"CHORUS_STATE_DIR": hostile, "PREFECT_API_URL": "http://127.0.0.1:4200/api"}))
    done = subprocess.run(["bash", "-c", f"source {env_file} && printf %s \"$CHORUS_STATE_DIR\""], capture_output=True,
                          text=True, check=True)
    assert done.stdout == hostile and not witness.exists()


def test_a_deployment_run_reads_inputs_only_under_the_servers_import_roots(monkeypatch, tmp_path):
    """A caller of a deployment run names input paths (a manifest, a library, label files, files to
    tag or search) only under orchestration.import_roots, and cannot force or rewrite promotion."""
    from chorus.errors import ConfigError
    from chorus_flows import _common

    inside, outside = tmp_path / "imports", tmp_path / "elsewhere"
    for folder in (inside, outside):
        folder.mkdir()
    monkeypatch.setenv("CHORUS_STATE_DIR", str(tmp_path / "served"))
    monkeypatch.setattr(_common, "_in_deployment_run", lambda: True)
    for given in ({"ingest": {"manifest": str(outside / "m.csv")}}, {"library": {"folder": str(outside)}},
                  {"ingest": {"social_dir": "/etc"}}, {"tasks": {"x": {"kind": "multi", "source": "file", "file": "/etc/passwd"}}}):
        with pytest.raises(ConfigError, match="only under the server's orchestration.import_roots"):
            _common.resolve(given)
    with pytest.raises(ConfigError, match="/etc/passwd: a deployment run reads only under"):
        _common.confine_inputs(["/etc/passwd"])
    for given in ({"promote": {"force": True}}, {"promote": {"rules": {}}}):
        with pytest.raises(ConfigError, match="the server's to set"):
            _common.resolve(given)
    monkeypatch.setenv("CHORUS_ORCHESTRATION__IMPORT_ROOTS", json.dumps([str(inside)]))
    assert _common.resolve({"library": {"folder": str(inside / "music")}}).library.folder == str(inside / "music")
    _common.confine_inputs([str(inside / "song.wav")])
    with pytest.raises(ConfigError, match="elsewhere"):
        _common.confine_inputs([str(inside / ".." / "elsewhere" / "song.wav")])  # resolved, not compared as text
    monkeypatch.setattr(_common, "_in_deployment_run", lambda: False)  # the CLI's own runs read what they like
    _common.confine_inputs(["/etc/passwd"])
