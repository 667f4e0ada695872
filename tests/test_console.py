"""What a command shows: a line per stage from the stages' progress events, third-party chatter kept to
the log file, and a closing table a line per stage."""

from __future__ import annotations

import json
import logging

from rich.console import Console
from rich.progress import Progress

from chorus.progress import ProgressEvent, listening, report
from chorus_ops.console import ConsoleFilter, StageBars, StageLog, stage_note, stage_summaries, summary_table
from conftest import run_chorus, tone, write_wav


def _record(name: str, message: str, level: int = logging.INFO, **extra: str) -> logging.LogRecord:
    record = logging.LogRecord(name, level, __file__, 1, message, None, None)
    record.__dict__.update(extra)
    return record


def test_stage_bars_follow_the_stages_progress_events():
    progress = Progress(console=Console(file=open("/dev/null", "w")))
    bars = StageBars(progress)
    bars(ProgressEvent("features", "started", 0, 3, "shards"))
    for _ in range(2):
        bars(ProgressEvent("features", "advanced", unit="shards", step=1))
    shards = progress.tasks[bars.rows["features"]]
    assert (shards.total, shards.completed) == (3, 2)
    bars(ProgressEvent("train", "advanced", 4, 5, "epochs", "short_chunk"))
    epochs = progress.tasks[bars.rows["train"]]
    assert (epochs.total, epochs.completed) == (5, 4) and "short_chunk" in epochs.description
    bars(ProgressEvent("features", "finished", detail="tracks 250", seconds=8.0))
    assert shards.finished and "done in 8.0 s" in shards.description


def test_without_a_terminal_each_stage_event_is_one_plain_line():
    """cron, CI or `> file`: a line when a stage starts, at each quarter of its work, and when it ends."""
    console = Console(record=True, width=200, force_terminal=False)
    with listening(StageLog(console)):
        report(ProgressEvent("features", "started", 0, 8, "shards"))
        for _ in range(8):
            report(ProgressEvent("features", "advanced", unit="shards", step=1))
        report(ProgressEvent("features", "finished", detail="tracks 400", seconds=12.5))
        report(ProgressEvent("labels", "finished", skipped=True))
    lines = [line.split(" ", 1)[1] for line in console.export_text().splitlines()]
    assert lines == ["features started (8 shards)", "features 25% (2/8 shards)", "features 50% (4/8 shards)",
                     "features 75% (6/8 shards)", "features 100% (8/8 shards)", "features done in 12.5 s: tracks 400",
                     "labels current, skipped"]


def test_a_failing_listener_never_fails_the_stage():
    def broken(event: ProgressEvent) -> None:
        raise RuntimeError("display gone")

    seen: list[ProgressEvent] = []
    with listening(broken), listening(seen.append):
        report(ProgressEvent("ingest", "started"))
    assert [e.stage for e in seen] == ["ingest"]


def test_the_terminal_keeps_our_warnings_and_every_error():
    keep = ConsoleFilter().filter
    assert not keep(_record("distributed.scheduler", "Register worker", logging.INFO))
    assert not keep(_record("py.warnings", "UserWarning: add type hints", logging.WARNING))
    assert not keep(_record("prefect.task_runs", "Finished in state Completed()", logging.INFO))
    assert keep(_record("prefect.task_runs", "quarantined a.wav: truncated", logging.WARNING))
    assert keep(_record("chorus.stages", "no search index", logging.WARNING))
    assert keep(_record("mlflow.store", "database is locked", logging.ERROR))


def test_the_closing_table_has_a_line_per_stage_with_why_it_skipped():
    summary = {"ingest": {"stage": "ingest", "skipped": False, "seconds": 1.5, "outputs": {"tracks": "/x"},
                          "counts": {"tracks": 3, "quarantined": 1, "reasons": {"truncated": 1}}},
               "labels": {"stage": "labels", "skipped": True, "seconds": 0.0, "outputs": {},
                          "counts": {"reason": "no social data (ingest.social_dir)"}}}
    assert stage_note(summary["ingest"]) == "tracks 3, quarantined 1"
    assert stage_note(summary["labels"]) == "no social data (ingest.social_dir)"
    console = Console(record=True, width=100)
    console.print(summary_table(summary))
    text = console.export_text()
    assert "ingest" in text and "done" in text and "skipped (current)" in text


def test_a_stage_command_prints_a_summary_and_logs_the_rest_to_the_state(tmp_path):
    corpus = tmp_path / "corpus"
    for label, freq in (("low", 220.0), ("high", 880.0)):
        for i in range(2):
            write_wav(corpus / label / f"{label}-{i}.wav", tone(3.0, freq * (1 + i / 10)))
    state = tmp_path / "state"
    done = run_chorus("--state-dir", str(state), "--set", f"ingest.manifest={corpus}", "ingest", cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    output = (done.stdout + done.stderr).splitlines()
    assert len(output) < 20, "\n".join(output)
    assert not any("| INFO" in line or "distributed." in line for line in output), "\n".join(output)
    logs = sorted((state / "logs").glob("ingest-*.log"))
    assert len(logs) == 1 and "Finished in state Completed()" in logs[0].read_text()
    stages = {s["stage"]: s for s in stage_summaries(json.loads(logs[0].with_suffix(".json").read_text()))}
    assert stages["ingest"]["counts"]["tracks"] == 4 and stages["ingest"]["outputs"]["tracks"].endswith("tracks.parquet")
