"""The process heap settings `chorus` applies before training: a training step's tensors come
from the heap, not from fresh page-faulted mappings (measured in docs/benchmarks.md)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import resource, sys, torch
if sys.argv[1] == "tuned":
    from chorus.compute import tune_process_allocator
    assert tune_process_allocator() or True
if sys.argv[1] == "stage":  # as a served flow run's process or a library caller: no CLI launcher
    from chorus.config import load_settings
    from chorus.stages.context import StageContext
    StageContext.open(load_settings(overrides={"state_dir": sys.argv[2]}))
torch.set_num_threads(1)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3, padding=1))
x = torch.randn(16, 3, 128, 128)
net(x).sum().backward()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    net.zero_grad()
    net(x).sum().backward()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, env: dict[str, str] | None = None, *args: str) -> int:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode, *args], capture_output=True, text=True, check=True, env=env)
    return int(done.stdout.strip().splitlines()[-1])


def test_training_steps_reuse_the_heap_instead_of_faulting_in_fresh_pages():
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    plain, tuned = _faults("plain", env), _faults("tuned", env)
    assert tuned * 5 < plain, (plain, tuned)


def test_a_process_that_opens_a_stage_gets_the_tuned_heap_without_the_cli(tmp_path):
    """`chorus serve`'s flow runs start in processes of Prefect's runner, and library callers in
    their own: opening a stage tunes the heap there too."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    plain, stage = _faults("plain", env), _faults("stage", env, str(tmp_path / "state"))
    assert stage * 5 < plain, (plain, stage)


def test_a_heap_setting_the_user_chose_is_kept():
    import os

    from chorus.compute import tune_process_allocator

    os.environ["MALLOC_MMAP_MAX_"] = "65536"
    try:
        assert "MALLOC_MMAP_MAX_" not in tune_process_allocator()
    finally:
        del os.environ["MALLOC_MMAP_MAX_"]
