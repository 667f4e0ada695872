"""Managed processes of the local services: what a service is (how to start it, how to know it
is ready, whom it runs as) and the probes its health checks use: an HTTP URL, a TCP port, a pid."""

from __future__ import annotations

import os
import socket
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Account = Literal["caller", "servers", "scheduler"]  # who a service runs as (see Service.account)


@dataclass
class Service:
    """One managed process: how to start it and how to know it is ready."""

    name: str
    argv: list[str]
    healthy: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    url: str = ""
    wave: int = 0  # services of one wave start together; a wave waits for the one before to be healthy
    account: Account = "caller"  # started as root, "servers" runs as services.run_as, "scheduler" as services.dask_run_as


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return bool(200 <= response.status < 300)
        except OSError:
            return False

    return check


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 now (held together while chosen, so never the same)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of this process counts as gone
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True
