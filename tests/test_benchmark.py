"""The benchmark runs end to end, and dpo_utils and TRL train the same thing (same final loss)."""

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "dpo_step.py"


def test_dpo_utils_and_trl_agree_on_the_loss_after_training():
    out = subprocess.run([sys.executable, str(SCRIPT), "--configs", "dpo_utils", "trl-precompute", "--steps", "1",
                          "--pairs", "2", "--prompt-tokens", "12", "--completion-tokens", "10", "--lr", "1e-4"],
                         capture_output=True, text=True, timeout=600)
    rows = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\S+)\s+[\d.]+\s+\d+\s+[\d.]+\s+\d+\s+([\d.]+)$", out.stdout, re.M)}
    assert set(rows) == {"dpo_utils", "trl-precompute"}, out.stdout + out.stderr[-2000:]
    assert rows["dpo_utils"] < 0.69  # two steps at lr 1e-4 moved away from log 2
    assert abs(rows["dpo_utils"] - rows["trl-precompute"]) < 2e-3
