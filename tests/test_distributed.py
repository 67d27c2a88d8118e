"""The trainer under two processes (accelerate's data parallelism on CPU, gloo): it ends where one process does,
and a run killed part-way resumes on both processes and ends exactly where an uninterrupted one does."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import tiny_llama

ROOT = Path(__file__).resolve().parent.parent
ONE_PROCESS = [sys.executable, str(ROOT / "tests" / "distributed_train.py")]
TWO_PROCESSES = [
    sys.executable,
    "-m",
    "torch.distributed.run",
    "--standalone",
    "--nproc_per_node",
    "2",
    str(ROOT / "tests" / "distributed_train.py"),
]
STEPS, LEARNING_RATE = 3, 1e-2  # distributed_train.py's defaults


def weight_tolerance(steps: int, learning_rate: float, n_params: int, dtype: torch.dtype = torch.float32) -> float:
    """How far apart two runs can end that differ only in the order of their float sums.

    AdamW moves every weight by about ``learning_rate`` per step whatever the size of its gradient, so
    an error in a gradient element, relative to that element, becomes the same relative error of its
    step. Another summation order changes a sum by about ``eps`` times the size of its terms; relative
    to the sum, by ``eps`` times how much the terms cancel. Among ``n_params`` elements the most
    cancelled one has terms about ``n_params`` times larger than their sum (the smallest of n ratios
    spread evenly near 0 is about 1/n), so the worst step is off by about
    ``learning_rate * n_params * eps``, and the worst weight after ``steps`` steps by ``steps`` times
    that: 7.4e-5 for the tiny model (20,640 parameters) after 3 steps at lr 1e-2, where 1.3e-6 to
    3.7e-6 was measured at batch 4 and 8 and a user measured 1.04e-5. A bug in the data parallelism
    (a wrong share, a wrong average) changes steps by about ``learning_rate`` itself, about
    1/(n_params * eps) = 400 times more.
    """
    return steps * learning_rate * n_params * torch.finfo(dtype).eps


def _run(command: list[str], output: Path, *options: str, killed: bool = False) -> dict | None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        command + [str(output), *options], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    if killed:
        assert result.returncode != 0 and not output.exists(), result.stderr[-3000:]
        return None
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(output, weights_only=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One uninterrupted run in one process and one in two (keeping checkpoints, as the resumed run does)."""
    folder = tmp_path_factory.mktemp("distributed")
    return {
        "one": _run(ONE_PROCESS, folder / "one.pt"),
        "two": _run(TWO_PROCESSES, folder / "two.pt", "--output-dir", str(folder / "uninterrupted")),
    }


def test_two_processes_give_the_weights_of_one_with_the_same_global_batch(runs):
    single, double = runs["one"], runs["two"]
    assert (single["processes"], double["processes"]) == (1, 2)
    tolerance = weight_tolerance(STEPS, LEARNING_RATE, sum(w.numel() for w in tiny_llama().parameters()))
    worst = max((single["weights"][k] - double["weights"][k]).abs().max().item() for k in single["weights"])
    assert worst < tolerance, (worst, tolerance)
    for a, b in zip(single["history"], double["history"]):  # metrics are gathered from both processes
        assert abs(a["loss"] - b["loss"]) < 1e-5 and abs(a["rewards/margins"] - b["rewards/margins"]) < 1e-4
    initial = tiny_llama().state_dict()
    moved = max((single["weights"][k] - initial[k]).abs().max().item() for k in initial)
    assert moved > 100 * tolerance  # both really trained: the agreement is not two untouched models


def test_two_processes_killed_part_way_resume_and_end_where_an_uninterrupted_run_ends(runs, tmp_path):
    """Both processes are SIGKILLed before step 3; the checkpoint of step 1 or 2 (whichever was complete) resumes
    on both (torch.load must map accelerate's "cpu:0" device to "cpu") and the end is bit-identical."""
    checkpoints = str(tmp_path / "run")
    _run(TWO_PROCESSES, tmp_path / "killed.pt", "--output-dir", checkpoints, "--kill-at", "2", killed=True)
    resumed = _run(TWO_PROCESSES, tmp_path / "resumed.pt", "--output-dir", checkpoints)
    assert resumed["processes"] == 2 and resumed["resumed_at"] in (1, 2)
    assert [row["step"] for row in resumed["history"]] == [1, 2, 3]
    uninterrupted = runs["two"]
    for name, weight in uninterrupted["weights"].items():
        assert torch.equal(resumed["weights"][name], weight), name
    assert resumed["history"] == uninterrupted["history"]


def test_the_derived_tolerance_admits_measured_rounding_and_refuses_a_wrong_step():
    n_params = sum(w.numel() for w in tiny_llama().parameters())
    tolerance = weight_tolerance(STEPS, LEARNING_RATE, n_params)
    assert (
        1.04e-5 < tolerance < LEARNING_RATE / 100
    )  # the user's measurement at batch 4 passes; a step 1% off does not
    assert weight_tolerance(6, LEARNING_RATE, n_params) == 2 * tolerance  # grows with the steps
    assert (
        weight_tolerance(STEPS, LEARNING_RATE, n_params, torch.bfloat16) > 10_000 * tolerance
    )  # and with the dtype's eps
