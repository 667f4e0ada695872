"""The local Dask cluster a stage starts (`compute.address` unset): on 127.0.0.1 over TLS with a
certificate made for it, so only this process's clients can run code on its workers."""

from __future__ import annotations

import os

import pytest
from distributed import Client
from distributed.security import Security

from chorus.compute import DASK_CLIENTS, dask_cluster
from chorus.config import ComputeSettings


def test_a_local_cluster_runs_our_tasks_and_refuses_a_client_without_its_certificate():
    settings = ComputeSettings(workers=1)
    with dask_cluster(settings) as address:
        assert address.startswith("tls://127.0.0.1:")
        ours = DASK_CLIENTS.get(address, settings)
        assert ours.submit(os.getpid).result(timeout=60) != os.getpid()  # ran in the worker process
        with pytest.raises(OSError):  # another local user, with a certificate of their own making
            Client(address, timeout=5, set_as_default=False, security=Security.temporary())
        with pytest.raises(OSError):  # or none: a plain connection
            Client(address.replace("tls://", "tcp://"), timeout=3, set_as_default=False)
