"""``chorus bench``: each benchmark prints its figures, the last line one JSON object."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from chorus_ops.session import CTX, console, err, terminal_logs_without_tracebacks

bench_app = typer.Typer(help="Benchmarks: each prints its figures, the last line one JSON object.", no_args_is_help=True)


JsonFlag = Annotated[bool, typer.Option("--json", help="Only the JSON line on stdout (progress on stderr).")]


def _report_figures(figures: dict[str, Any], as_json: bool) -> None:
    """Readable lines (unless --json), then the figures as one JSON object on the last line."""
    if not as_json:
        for key, value in figures.items():
            console.print(f"{key:>28}: {value}")
    print(json.dumps(figures), flush=True)


@bench_app.command("features")
def bench_features(
    quick: Annotated[bool, typer.Option("--quick", help="A few short clips: checks the keys and the dB agreement.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """The features flow (1 and 2 warm Dask workers) against the pinned naive librosa chain."""
    from chorus_bench.features import run as run_bench  # loads its workload's libraries: only when asked

    settings = CTX.settings()
    if not CTX.debug:
        terminal_logs_without_tracebacks()
    _report_figures(run_bench(settings, quick=quick, log=err.print), as_json)


@bench_app.command("voting")
def bench_voting(
    quick: Annotated[bool, typer.Option("--quick", help="A small graph: checks chorus's truths equal networkx's.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Personal truths over a generated 1M-user follow graph against networkx + pandas."""
    from chorus_bench.voting import run as run_bench  # loads its workload's libraries: only when asked

    _report_figures(run_bench(CTX.settings().state_dir, quick=quick, log=err.print), as_json)


@bench_app.command("scale")
def bench_scale(
    quick: Annotated[bool, typer.Option("--quick", help="100 and 400 tracks: checks the keys and flatness loosely.")] = False,
    as_json: JsonFlag = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Also draw the curve as an SVG here.")] = None,
) -> None:
    """Ingest, features and labels on 1,000, 4,000 and 16,000 synthetic tracks: time per track and peak memory per size."""
    from chorus.compute import local_workers
    from chorus_bench import scale  # loads its workload's libraries: only when asked

    settings = CTX.settings()
    if not CTX.debug:
        terminal_logs_without_tracebacks()
    figures = scale.run(quick=quick, workers=local_workers(settings.compute), log=err.print)
    if plot is not None:
        scale.plot(figures, plot)
    _report_figures(figures, as_json)


@bench_app.command("train")
def bench_train(
    quick: Annotated[bool, typer.Option("--quick", help="Two models, a few steps: checks the keys.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Training-step throughput and loader share per network, automatic precision against fp32."""
    from chorus_bench.train import run as run_bench  # loads its workload's libraries: only when asked

    _report_figures(run_bench(CTX.settings(), quick=quick, log=err.print), as_json)


@bench_app.command("search")
def bench_search(
    quick: Annotated[bool, typer.Option("--quick", help="A small index, checked against a numpy scan (seconds).")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Exact and approximate Hamming, cosine and re-ranked search over 1M synthetic clustered items."""
    from chorus_bench.search import run as run_bench  # loads its workload's libraries: only when asked

    _report_figures(run_bench(CTX.settings().search, quick=quick, log=err.print), as_json)


@bench_app.command("melody")
def bench_melody(
    quick: Annotated[bool, typer.Option("--quick", help="3,000 tunes: checks the keys and that the sung tune is found.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """The melody index over 100,000 synthetic tunes: query latency and recall against exhaustive alignment."""
    from chorus_bench.melody import run as run_bench  # loads its workload's libraries: only when asked

    _report_figures(run_bench(CTX.settings().melody, quick=quick, log=err.print), as_json)


@bench_app.command("personal")
def bench_personal(
    quick: Annotated[bool, typer.Option("--quick", help="5,000 listeners: checks the keys.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """The personalised model's listener heads for 100,000 synthetic listeners: time, memory, ranking a catalogue."""
    from chorus_bench.personal import run as run_bench  # loads its workload's libraries: only when asked

    _report_figures(run_bench(quick=quick, log=err.print), as_json)


@bench_app.command("faults")
def bench_faults(
    quick: Annotated[bool, typer.Option("--quick", help="The bad-input kinds and symlinks, without the long file.")] = False,
    as_json: JsonFlag = False,
    services: Annotated[bool | None, typer.Option(
        "--services/--no-services", help="Also kill each local service in the middle of a run (needs PostgreSQL, "
                                         "which make services-up installs); default: in the full run, when installed.")] = None,
    processes: Annotated[bool | None, typer.Option(
        "--processes/--no-processes", help="Also kill chorus's own process during labels and train (at 30/60/90% "
                                           "of an undisturbed run; 60% with --quick); default: in the full run.")] = None,
) -> None:
    """Each fault injected beside good files (and each local service and chorus's own process killed
    mid-run); per fault: survived, records in/out/quarantined, lost, duplicated, time to recover."""
    from chorus_bench.faults import run as run_bench  # loads its workload's libraries: only when asked

    if not CTX.debug:
        terminal_logs_without_tracebacks()
    _report_figures(run_bench(quick=quick, log=err.print, services=services, processes=processes), as_json)


@bench_app.command("transfer")
def bench_transfer(
    quick: Annotated[bool, typer.Option("--quick", help="The test tier's corpus, up to six 20 s excerpts per label: checks the keys.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """musicnn's pretrained embeddings (linear probe) against the from-scratch CNNs and MFCC + SVM on a real-music
    corpus of Debian packages: held-out accuracy with 95% intervals, the majority baseline, the margins."""
    from chorus_bench.transfer import run as run_bench  # loads its workload's libraries: only when asked

    if not CTX.debug:
        terminal_logs_without_tracebacks()
    _report_figures(run_bench(quick=quick, log=err.print), as_json)
