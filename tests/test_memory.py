"""The memory estimate of dpo_utils.runtime.memory against peaks measured on CPU (fresh processes)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 0.25  # the estimate must be within 25 % of the measured peak


def measure(mode: str) -> dict:
    # Large blocks go straight to mmap and back to the system on free: RSS follows live tensors.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "memory_probe.py"), mode],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["shared", "full"])
def test_estimate_is_within_tolerance_of_the_measured_peak(mode):
    result = measure(mode)
    ratio = result["estimate"]["total"] / result["measured"]
    assert 1 - TOLERANCE < ratio < 1 + TOLERANCE, (ratio, result)
