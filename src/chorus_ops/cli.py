"""The ``chorus`` command. Errors print one line naming the file/row and rule (--debug: traceback).

Stage commands run the Prefect flows of ``chorus_flows`` in this process (``chorus_ops.session``);
the console shows a line per stage and the closing summary, the full log goes to
``<state>/logs/`` (``--verbose`` shows it as it is written).
"""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
import yaml
from rich.table import Table

from chorus import DISTRIBUTION, registry
from chorus.config import PROFILES, parse_overrides
from chorus.datasets.adapters import DATASETS
from chorus.housekeeping import find_garbage, remove
from chorus.promotion import verdict
from chorus.state import StateDir, state_lock
from chorus_ops.console import summary_table
from chorus_ops.query_cli import hum, playlist, search, tag
from chorus_ops.services_cli import serve, services_app
from chorus_ops.session import (
    CTX,
    EXIT_ALARM,
    JsonFlag,
    console,
    emit_json,
    err,
    run_flow,
)

COMMANDS_GROUP = "chorus.commands"

app = typer.Typer(
    name="chorus",
    help="Learn music labels from a crowd: demo corpus, ingest, features, labels, train, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)
app.add_typer(services_app, name="services")
for _command in entry_points(group=COMMANDS_GROUP):  # plug-in command groups: `chorus bench` (chorus_bench)
    app.add_typer(_command.load(), name=_command.name)
app.command()(serve)
for _query in (tag, search, hum, playlist):
    app.command()(_query)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"chorus {version(DISTRIBUTION)}", highlight=False)
        raise typer.Exit()


@app.callback()
def main_options(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings file.")] = None,
    state_dir: Annotated[Path | None, typer.Option("--state-dir", help="Where outputs live (default ./.chorus).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a setting: section.key=value (repeatable).")] = None,
    lock_timeout: Annotated[float | None, typer.Option("--lock-timeout", help="Seconds to wait for a busy state dir (-1: forever).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show the full log on the terminal as it is written.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="Print chorus's version and exit.")] = False,
) -> None:
    """Global options go before the command or after it (chorus run --set train.epochs=1)."""
    CTX.config = config
    CTX.debug = debug
    CTX.verbose = verbose
    overrides = parse_overrides(set_ or [])
    if state_dir is not None:
        overrides["state_dir"] = str(state_dir)
    if lock_timeout is not None:
        overrides["lock_timeout_s"] = lock_timeout
    CTX.overrides = overrides


def _print_summary(summary: dict) -> None:
    console.print(summary_table(summary))


@app.command("config")
def show_config() -> None:
    """Print the resolved settings (defaults < YAML < CHORUS_* env < --set flags)."""
    console.print(yaml.safe_dump(CTX.settings().model_dump(mode="json"), sort_keys=False))


@app.command("demo-data")
def demo_data(
    scale: Annotated[float | None, typer.Option(help="Multiply tracks per style and users.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
) -> None:
    """Render the demo corpus and simulate its crowd (offline, deterministic from the seed)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from chorus.stages import demo_stage  # imports torch and mlflow: only for this command

    if scale is not None:
        CTX.overrides.setdefault("demo", {})["scale"] = scale
    if seed is not None:
        CTX.overrides.setdefault("demo", {})["seed"] = seed
    settings = CTX.settings()
    with state_lock(StateDir(settings.state_dir), settings.lock_timeout_s), Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    ) as progress:
        job = progress.add_task("rendering", total=None)
        summary = demo_stage(settings, progress=lambda done, total: progress.update(job, completed=done, total=total))
    _print_summary(summary.as_dict())


Dataset = Annotated[Literal["mtat", "jamendo", "gtzan"] | None, typer.Option("--dataset", help="A standard dataset in its own layout.")]
DatasetRoot = Annotated[Path | None, typer.Option("--root", help="The dataset's root folder (with --dataset).")]


def _select_dataset(dataset: str | None, root: Path | None) -> None:
    if dataset is None and root is None:
        return
    if dataset not in DATASETS or root is None:
        raise typer.BadParameter(f"--dataset ({', '.join(DATASETS)}) and --root DIR go together")
    CTX.overrides.setdefault("ingest", {}).update({"adapter": dataset, "manifest": str(root.expanduser().resolve())})


@app.command()
def ingest(dataset: Dataset = None, root: DatasetRoot = None) -> None:
    """Probe, decode and validate the corpus (the demo one unless ingest.manifest or --dataset is set)."""
    _select_dataset(dataset, root)
    _print_summary(run_flow("ingest"))


@app.command()
def features() -> None:
    """Log-mel, harmonic/percussive log-mel and MFCC statistics per segment, on Dask, into Parquet."""
    _print_summary(run_flow("features"))


@app.command()
def labels() -> None:
    """Global, group and personal mood labels by weighted voting over the follow graph."""
    _print_summary(run_flow("labels"))


@app.command()
def melody() -> None:
    """Transcribe notes and melodies of new tracks, build the melody index, judge it with sung queries."""
    summary = run_flow("melody")
    _print_summary(summary)
    _print_humming(summary)


def _print_humming(melody_summary: dict[str, Any]) -> None:
    """The melody index's humming table, a line per distortion level (the report has it in full)."""
    for level, result in melody_summary.get("counts", {}).get("judged", {}).items():
        index = result.get("melody index", {})
        if index:
            console.print(f"humming ({level}, {result['queries']} queries): top-10 {index['top10']['mean']:.2f} "
                          f"[{index['top10']['ci'][0]:.2f}, {index['top10']['ci'][1]:.2f}], top-1 {index['top1']['mean']:.2f}")


@app.command()
def drift(paths: Annotated[list[str] | None, typer.Argument(help="Audio files or folders (default: the tracks the last "
                                                                    "ingest added).")] = None,
          as_json: JsonFlag = False) -> None:
    """The drift watch: a batch against the champion's training tracks; prints the verdict and the
    report, and exits 5 on an alarm (a cron job or CI script can act on it)."""
    summary = run_flow("drift", paths=paths or None)
    counts = summary["counts"]
    if as_json:
        emit_json(summary)
    elif summary["skipped"]:
        console.print(f"drift: not tested: {counts['reason']}")
    else:
        verdict = "[bold red]DRIFT[/]" if counts["alarm"] else "no drift"
        console.print(f"drift: {verdict}: {counts['drifted_share']:.0%} of tests reject "
                      f"({', '.join(counts['drifted']) or 'none'}); {counts['batch']}")
        console.print(f"report: {summary['outputs']['report']}", highlight=False, soft_wrap=True)
    if not summary["skipped"] and counts["alarm"]:
        raise typer.Exit(EXIT_ALARM)


Profile = Annotated[Literal["default", "full"] | None,
                    typer.Option("--profile", help="Candidate set: default, or full (every model and baseline).")]
Task = Annotated[str | None, typer.Option("--task", help="Train and report one task (settings: tasks.<name>), e.g. tags "
                                                         "(MagnaTagATune, MTG-Jamendo) or genre (GTZAN).")]


def _select(profile: str | None, candidates: list[str] | None) -> None:
    if profile is not None:
        CTX.overrides.setdefault("train", {})["profile"] = profile
    if candidates:
        CTX.overrides.setdefault("train", {})["candidates"] = candidates


@app.command()
def pretrain() -> None:
    """Pretrain the shared backbone on its pretext task (cached; registered as <prefix>-backbone)."""
    _print_summary(run_flow("train", flow_name="pretrain"))


@app.command()
def train(
    candidate: Annotated[list[str] | None, typer.Option("--candidate",
                                                         help="Train this candidate (repeatable); see `chorus candidates`.")] = None,
    profile: Profile = None,
    task: Task = None,
) -> None:
    """Train, track and register the selected models and baselines."""
    CTX.task = task
    _select(profile, candidate)
    _print_summary(run_flow("train"))


@app.command()
def candidates(as_json: JsonFlag = False) -> None:
    """List every model and baseline `chorus train --candidate` accepts, and the profiles."""
    from chorus.families import CATALOGUE  # imports torch: only for this listing

    if as_json:
        emit_json({name: {"task": spec.task, "family": spec.family, "needs": list(spec.needs),
                          "profiles": [p for p, names in PROFILES.items() if name in names]} for name, spec in CATALOGUE.items()})
        return
    table = Table(title="candidates")
    for column in ("candidate", "task", "family", "needs", "profiles"):
        table.add_column(column)
    for name, spec in CATALOGUE.items():
        table.add_row(name, spec.task, spec.family, ", ".join(spec.needs),
                      ", ".join(p for p, names in PROFILES.items() if name in names))
    console.print(table)


@app.command()
def evaluate(task: Task = None) -> None:
    """Evaluate the champion on the held-out split and write the report."""
    CTX.task = task
    _print_summary(run_flow("evaluate"))


@app.command()
def promote(dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide and audit, move no alias.")] = False,
            as_json: JsonFlag = False) -> None:
    """Run the promotion gate: each challenger against its champion, scored afresh on the valid split."""
    summary = run_flow("promote", dry_run=dry_run)
    if as_json:
        emit_json(summary)
        return
    for name, decision in summary["counts"]["decisions"].items():
        said = verdict(decision) if decision["decided"] else "no decision"
        console.print(f"[bold]{name}[/]: {said}: {decision['reason']}")
    console.print(f"audit: {summary['outputs']['audit']}")


@app.command()
def personal() -> None:
    """Train the personalised mood model (heads per listener, group and globally), judge it by the article's protocol."""
    summary = run_flow("personal")
    _print_summary(summary)


@app.command("index")
def build_index() -> None:
    """Build the search index of the champions (semantic vectors + hash codes) and check it with
    degraded copies of every track."""
    summary = run_flow("search", flow_name="index")
    _print_summary(summary)
    found = summary["counts"]["degraded_found_in_top_k"]
    console.print("original in the top k from degraded copies (worst of excerpt/noise/gain): "
                  + ", ".join(f"{mode} {share:.0%}" for mode, share in found.items()))


@app.command()
def rollback(model: Annotated[str, typer.Argument(help="Registered name, e.g. chorus-style.")]) -> None:
    """Restore the previous champion of MODEL (audited; run again to undo)."""
    from chorus.stages import rollback_stage  # imports torch and mlflow: only for this command

    settings = CTX.settings()
    with state_lock(StateDir(settings.state_dir), settings.lock_timeout_s):
        decision = rollback_stage(settings, model)
    console.print(f"{model}: champion v{decision['champion']} -> v{decision['challenger']}")


def _alias_text(name: str, alias: str) -> str:
    version = registry.alias_version(name, alias)
    return f"v{version}" if version else ""


LabelFrom = Annotated[Literal["top", "parent", "grandparent", "none"] | None,
                      typer.Option("--label-from", help="With --library: labels from the folders (default none).")]


@app.command()
def run(profile: Profile = None, task: Task = None, dataset: Dataset = None, root: DatasetRoot = None,
        library: Annotated[Path | None, typer.Option("--library", help="Your own music: tag, index and catalogue every "
                                                                        "audio file under this folder (nothing trained).")] = None,
        label_from: LabelFrom = None, as_json: JsonFlag = False) -> None:
    """Run the whole pipeline as one Prefect flow and print where every output is (--library DIR:
    your own music instead)."""
    if library is not None:
        _run_library(library, label_from, as_json)
        return
    CTX.task = task
    _select_dataset(dataset, root)
    _select(profile, None)
    summary = run_flow("pipeline")
    if as_json:
        emit_json(summary)
        return
    _print_summary(summary)
    settings = CTX.settings()
    state = StateDir(settings.state_dir)
    console.print(f"[bold]State directory[/]: {state.root}")
    models = Table(title=f"registered in {settings.tracking_uri}")
    for column in ("candidate", "model", "validation", "test", "champion", "challenger"):
        models.add_column(column, overflow="fold")
    tested = summary["evaluate"]["counts"].get("candidates", {})
    registry.configure(settings.tracking_uri, service_wait_s=settings.orchestration.service_wait_s)
    for name, row in summary["train"]["counts"]["candidates"].items():
        valid = row.get("valid_score")
        models.add_row(name, f"models:/{row['registered']}/{row['version']}", f"{valid:.3f}" if valid is not None else "",
                       f"{tested[name]:.3f}" if name in tested else "", _alias_text(row["registered"], "champion"),
                       _alias_text(row["registered"], "challenger"))
    for name, decision in summary["promote"]["counts"]["decisions"].items():
        console.print(f"[bold]Promotion[/] {name}: {decision['reason']}")
    console.print(models)
    if "melody" in summary:
        _print_humming(summary["melody"])
    console.print(f"[bold]Report[/]: {summary['evaluate']['outputs']['report']}")
    console.print(f"[bold]Metrics[/]: {summary['evaluate']['outputs']['metrics']}")
    console.print(f"[bold]Data Docs[/]: {state.data_docs / 'index.html'}")
    console.print(f"[bold]MLflow UI[/]: mlflow ui --backend-store-uri {settings.tracking_uri}")
    console.print("[bold]Stage timings (s)[/]: " + json.dumps(summary["timings_s"]))
    console.print(f"[bold]Log[/]: {CTX.log} (every stage's outputs: {CTX.log.with_suffix('.json') if CTX.log else ''})")


def _run_library(folder: Path, label_from: str | None, as_json: bool) -> None:
    if not folder.is_dir():
        raise typer.BadParameter(f"{folder} is not a folder", param_hint="--library")
    summary = run_flow("library", folder=str(folder.expanduser().resolve()), label_from=label_from)
    if as_json:
        emit_json(summary)
        return
    _print_summary(summary)
    library = summary["library"]
    console.print(f"[bold]Catalogue[/]: {library['outputs']['catalogue']}", highlight=False, soft_wrap=True)
    console.print(f"[bold]Tags[/]: {library['outputs']['tags']}", highlight=False, soft_wrap=True)
    console.print("[bold]Next[/]: chorus search --library --like FILE · chorus tag --library FILE", highlight=False)


@app.command("forget-user")
def forget_user(user_id: Annotated[str, typer.Argument(help="The user's id as in the social tables.")]) -> None:
    """Remove a user's social rows (now and at every later ingest) and recompute the labels."""
    from chorus.stages import forget_user_stage  # imports torch and mlflow: only for this command

    settings = CTX.settings()
    with state_lock(StateDir(settings.state_dir), settings.lock_timeout_s):
        result = forget_user_stage(settings, user_id)
    console.print(f"removed rows: {result['dropped']}")
    _print_summary(result["labels"])


@app.command()
def card(model: Annotated[str, typer.Argument(help="models:/NAME@ALIAS, models:/NAME/VERSION, NAME@ALIAS, NAME/VERSION or "
                                                   "NAME (its champion).")],
         as_json: JsonFlag = False) -> None:
    """Write a registered version's model card (HTML, and markdown as an MLflow artifact of its run); print its path."""
    from chorus.stages import card_stage  # imports torch and mlflow: only for this command

    settings = CTX.settings()
    summary = card_stage(settings, model)
    if as_json:
        emit_json(summary.as_dict())
        return
    console.print(summary.outputs["card"], highlight=False, soft_wrap=True)


@app.command("rekey-forgotten")
def rekey_forgotten() -> None:
    """A new key for the forgotten users' digests: each is made again under it from the social
    tables' ids; one no id matches stays listed under its old key (nobody forgotten comes back)."""
    from chorus.stages import rekey_forgotten_stage

    settings = CTX.settings()
    with state_lock(StateDir(settings.state_dir), settings.lock_timeout_s):
        counts = rekey_forgotten_stage(settings)
    console.print(f"forgotten users re-keyed: {counts['rekeyed']}; left under their old key (no id matched): "
                  f"{counts['retired']}")


@app.command()
def gc(
    delete: Annotated[bool, typer.Option("--delete", help="Remove what is listed (default: a dry run that only lists).")] = False,
) -> None:
    """List (and with --delete remove) feature sets and files no setting or registered model refers to."""
    settings = CTX.settings()
    with state_lock(StateDir(settings.state_dir), settings.lock_timeout_s):
        db = Path(settings.tracking_uri.removeprefix("sqlite:///"))
        hashes: set[str] = set()
        if not settings.tracking_uri.startswith("sqlite:///") or db.exists():
            registry.configure(settings.tracking_uri, service_wait_s=settings.orchestration.service_wait_s)
            hashes = registry.registered_feature_hashes()
        garbage = find_garbage(settings, hashes)
        table = Table(title="unreferenced outputs" + ("" if delete else " (dry run: --delete removes them)"))
        for column in ("path", "MiB", "why"):
            table.add_column(column, overflow="fold")
        for item in garbage:
            table.add_row(str(item.path), f"{item.bytes / 2**20:.1f}", item.reason)
        console.print(table)
        total = sum(g.bytes for g in garbage) / 2**20
        if delete:
            remove(garbage)
            console.print(f"removed {len(garbage)} item(s), {total:.1f} MiB")
        else:
            console.print(f"{len(garbage)} item(s), {total:.1f} MiB would be removed")
