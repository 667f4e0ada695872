"""The commands that answer questions about music: ``tag``, ``search``, ``hum`` and ``playlist``.
Each prints a table, or with ``--json`` one JSON document on stdout (logs stay on stderr)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
import typer
from rich.table import Table

from chorus_ops.session import CTX, EXIT_REFUSED, JsonFlag, console, emit_json, run_flow

Library = Annotated[bool, typer.Option("--library", help="Against the music library (chorus run --library DIR): its "
                                                         "pretrained taggers and index, no trained model.")]


def _records(path: str) -> list[dict[str, Any]]:
    return pd.read_parquet(path).to_dict("records")


def tag(
    paths: Annotated[list[str], typer.Argument(help="Audio files or folders.")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="models:/NAME@ALIAS, models:/NAME/VERSION, NAME@ALIAS, "
                                                                    "NAME/VERSION or NAME (default: chorus-style).")] = None,
    top_n: Annotated[int | None, typer.Option("--top-n", min=1, help="Labels per file: a tagger's strongest N (default 5), "
                                                                     "a single-label model's best N (default 1).")] = None,
    threshold: Annotated[float | None, typer.Option("--threshold", min=0.0, max=1.0,
                                                    help="Score a label needs (multi-label default 0.5).")] = None,
    out: Annotated[str | None, typer.Option(help="Parquet file to write (default: under <state>/tags/).")] = None,
    user: Annotated[str | None, typer.Option("--user", help="A listener's user id: moods as they hear each file "
                                                            "(the personalised mood model).")] = None,
    group: Annotated[str | None, typer.Option("--group", help="A group, NAME=VALUE (e.g. culture=culture_a): moods as "
                                                              "its listeners hear each file.")] = None,
    library: Library = False,
    strict: Annotated[bool, typer.Option("--strict", help=f"Exit {EXIT_REFUSED} when a file cannot be tagged.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Tag audio files with a registered model (same feature code, the model's feature settings)."""
    if library:
        summary = run_flow("library", flow_name="library_tag", paths=paths, out=out, top_n=top_n, threshold=threshold)
    else:
        summary = run_flow("tag", paths=paths, model=model, out=out, user=user, group=group, top_n=top_n,
                           threshold=threshold)
    rows = _records(summary["outputs"]["predictions"])
    refused = [r for r in rows if r.get("problem")]
    if as_json:
        emit_json({"model": summary["counts"].get("model") or summary["counts"].get("models"),
                   "predictions": summary["outputs"]["predictions"], "files": rows})
    else:
        table = Table(title=summary["counts"].get("model") or summary["counts"].get("models"))
        personal = user is not None or group is not None
        for column in ("file", *(["model"] if library else []), "labels", *(["answered by"] if personal else ["segments"])):
            table.add_column(column, overflow="fold")
        for row in rows:
            last = (row.get("level") or "") if personal else str(row.get("segments"))
            table.add_row(Path(row["file"]).name, *([row["model"]] if library else []),
                          row.get("problem") or ", ".join(row["labels"]), last)
        console.print(table)
        console.print(f"predictions: {summary['outputs']['predictions']}")
    if strict and refused:
        raise typer.Exit(EXIT_REFUSED)


def search(
    like: Annotated[list[str], typer.Option("--like", help="Audio file, folder or track id (or a 6+ character prefix); repeatable.")],
    k: Annotated[int | None, typer.Option("--k", min=1, help="Neighbours per query (default search.k).")] = None,
    mode: Annotated[Literal["hash", "semantic", "rerank"] | None,
                    typer.Option("--mode", help="Distance (default search.mode; a library: semantic).")] = None,
    out: Annotated[str | None, typer.Option(help="Parquet file to write (default: under <state>/search/results/).")] = None,
    library: Library = False,
    as_json: JsonFlag = False,
) -> None:
    """Similar songs: the nearest tracks of the champions' index (or the library's), with distances and labels."""
    if library:
        summary = run_flow("library", flow_name="library_search", queries=like, k=k or 10, mode=mode or "semantic", out=out)
    else:
        summary = run_flow("search", queries=like, k=k, mode=mode, out=out)
    hits = pd.read_parquet(summary["outputs"]["results"])
    if as_json:
        emit_json({"mode": summary["counts"]["mode"], "index": summary["counts"]["index"],
                   "results": summary["outputs"]["results"], "hits": hits.to_dict("records")})
        return
    labels = [c for c in hits.columns if c not in {"like", "rank", "track_id", "hamming", "cosine", "mode", "index"}]
    for query, rows in hits.groupby("like", sort=False):
        table = Table(title=f"like {query} ({summary['counts']['mode']}, index {summary['counts']['index']})")
        for column in ("rank", "track_id", "hamming", "cosine", *labels):
            table.add_column(column, overflow="fold")
        for row in rows.itertuples(index=False):
            table.add_row(str(row.rank), row.track_id, str(row.hamming), f"{row.cosine:.4f}",
                          *[str(getattr(row, c)) for c in labels])
        console.print(table)
    console.print(f"results: {summary['outputs']['results']}")


def hum(
    query: Annotated[str, typer.Argument(help="Audio file of a sung, hummed or whistled tune (8-20 s).")],
    k: Annotated[int | None, typer.Option("--k", min=1, help="Matches to print (default melody.k).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Find a song by its tune: the tracks whose melody contains the one in QUERY, best first."""
    summary = run_flow("melody", flow_name="hum", query=query, k=k)
    counts = summary["counts"]
    if as_json:
        emit_json({"query": counts["query"], "notes": counts["notes"], "catalogue": counts["catalogue"],
                   "matches": counts["matches"], "results": summary["outputs"]["results"]})
        return
    table = Table(title=f"hum {Path(counts['query']).name}: {counts['notes']} notes against {counts['catalogue']} melodies")
    for column in ("rank", "track_id", "cost", "starts at (s)", "file"):
        table.add_column(column, overflow="fold")
    for m in counts["matches"]:
        table.add_row(str(m["rank"]), m["track_id"], f"{m['cost']:.3f}", f"{m['offset_s']:.1f}", Path(m["uri"]).name)
    console.print(table)
    console.print(f"results: {summary['outputs']['results']}")


def playlist(
    mood: Annotated[str, typer.Option("--mood", help="One of the 12 moods, e.g. sadness.")],
    user: Annotated[str | None, typer.Option("--user", help="A listener's user id.")] = None,
    group: Annotated[str | None, typer.Option("--group", help="Or a group, NAME=VALUE.")] = None,
    k: Annotated[int, typer.Option("--k", min=1, help="Tracks to list.")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """The catalogue's tracks a listener (or group) would most hear as MOOD, from the personalised model."""
    from chorus.stages.personal import playlist as rank

    ranked, level = rank(CTX.settings(), mood, k, user, group)
    if as_json:
        emit_json({"mood": mood, "user": user, "group": group, "level": level, "tracks": ranked.to_dict("records")})
        return
    table = Table(title=f"{mood} for {'user ' + user if user else 'group ' + str(group) if group else 'everyone'} "
                        f"(answered by the {level} level)")
    for column in ("rank", "title", "score", "track_id"):
        table.add_column(column, overflow="fold")
    for row in ranked.itertuples(index=False):
        table.add_row(str(row.rank), row.title, f"{row.score:.3f}", row.track_id)
    console.print(table)
