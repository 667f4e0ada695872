"""The state lock: a second run against the same state refuses (or waits); it never interleaves."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from chorus.errors import StateLockedError
from chorus.state import StateDir, state_lock

HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from chorus.state import StateDir, state_lock
    with state_lock(StateDir(Path(sys.argv[1]))):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


def _hold(root, seconds):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(root), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_run_refuses_with_holder_named(tmp_path):
    proc = _hold(tmp_path, 30)
    try:
        with pytest.raises(StateLockedError, match=rf"in use by pid {proc.pid}"):
            with state_lock(StateDir(tmp_path), timeout_s=0):
                pass
    finally:
        proc.kill()
        proc.wait()


def test_second_run_waits_when_asked(tmp_path):
    proc = _hold(tmp_path, 1.5)
    started = time.monotonic()
    with state_lock(StateDir(tmp_path), timeout_s=30):
        waited = time.monotonic() - started
    proc.wait()
    assert 0.5 < waited < 30


def test_lock_is_reentrant_within_one_run(tmp_path):
    with state_lock(StateDir(tmp_path)):
        with state_lock(StateDir(tmp_path)):
            pass
    # and released afterwards: another process can take it
    proc = _hold(tmp_path, 0.1)
    proc.wait()
    assert proc.returncode == 0


def test_crashed_holder_does_not_leave_lock(tmp_path):
    proc = _hold(tmp_path, 30)
    proc.kill()
    proc.wait()
    with state_lock(StateDir(tmp_path), timeout_s=0):
        pass
