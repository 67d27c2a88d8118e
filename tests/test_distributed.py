"""The trainer under two processes (accelerate's data parallelism on CPU, gloo) ends where one process does."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.helpers import tiny_llama

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-5  # float sums in another order; measured: 1.4e-6 at most after 3 steps


def _run(command: list[str], output: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command + [str(output)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(output, weights_only=False)


def test_two_processes_give_the_weights_of_one_with_the_same_global_batch(tmp_path):
    script = str(ROOT / "tests" / "distributed_train.py")
    single = _run([sys.executable, script], tmp_path / "one.pt")
    double = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script], tmp_path / "two.pt")
    assert (single["processes"], double["processes"]) == (1, 2)
    worst = max((single["weights"][k] - double["weights"][k]).abs().max().item() for k in single["weights"])
    assert worst < TOLERANCE, worst
    for a, b in zip(single["history"], double["history"]):  # metrics are gathered from both processes
        assert abs(a["loss"] - b["loss"]) < 1e-5 and abs(a["rewards/margins"] - b["rewards/margins"]) < 1e-4
    initial = tiny_llama().state_dict()
    moved = max((single["weights"][k] - initial[k]).abs().max().item() for k in initial)
    assert moved > 1e-3  # both really trained: the agreement is not two untouched models
