"""Services killed mid-run (the service tier's fault rows), on local services of their own, so
that the suite's workers run them beside the rest of the service tier: the Dask scheduler and
the Prefect server killed during `chorus features`, MLflow and PostgreSQL during `chorus train`."""

from __future__ import annotations

import json
import os

import pytest

pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_services_killed_mid_run_fail_naming_them_and_the_same_command_completes():
    """Each run fails with one error line naming the service and its address, within the clients'
    retry policy; after `chorus services up` the same command completes, and its outputs equal an
    undisturbed run's (the shards row for row; one registered version, its metrics those of the
    undisturbed version)."""
    from chorus_bench.service_faults import run

    try:
        rows = run()
    finally:  # the run points this process's MLflow client at the services' user
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(name, None)
    assert [row["fault"] for row in rows] == ["dask-scheduler_killed_during_features", "prefect-server_killed_during_features",
                                             "mlflow_killed_during_train", "postgres_killed_during_train"]
    print(json.dumps({"faults": rows}))  # the fault table's rows (pytest -s shows them)
    for row in rows:
        assert row["survived"], row
        assert row["fail_seconds"] < 60, row  # the clients' retries (5 s here), not their defaults (minutes)
