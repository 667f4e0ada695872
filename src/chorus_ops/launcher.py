"""The ``chorus`` command's entry point, which imports the command line only when it runs.

Dask's local workers are spawned processes, and a spawned process first imports its parent's main
script: with the command line imported there (Prefect, MLflow, torch), each worker would start
about 5 s later and hold about 360 MiB more, counted against its memory limit.
"""

from __future__ import annotations


def main() -> None:
    from chorus_ops.cli import main as run

    run()
