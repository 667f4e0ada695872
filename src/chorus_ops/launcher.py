"""The ``chorus`` command's entry point, which imports the command line only when it runs.

Dask's local workers are spawned processes, and a spawned process first imports its parent's main
script: with the command line imported there (Prefect, MLflow, torch), each worker would import
them too, costing seconds of start and hundreds of MiB counted against its memory limit.
"""

from __future__ import annotations


def main() -> None:
    from chorus.compute import tune_process_allocator

    tune_process_allocator()  # before the first large tensor: training and embedding run in this process
    from chorus_ops.main import main as run

    run()
