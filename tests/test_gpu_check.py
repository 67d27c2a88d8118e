"""benchmarks/gpu_check.py: the one command to run on a GPU, smoke-tested at tiny sizes on the CPU."""

import json
import runpy
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def test_notebook_script_keeps_code_cells_in_order_and_drops_magics(tmp_path):
    notebook = {
        "cells": [
            {"cell_type": "markdown", "source": ["# title"]},
            {"cell_type": "code", "source": ["%matplotlib inline\n", "x = 1\n"]},
            {"cell_type": "code", "source": ["!pip install foo\n", "print(x + 1)"]},
        ]
    }
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps(notebook))
    script = runpy.run_path(str(SCRIPT), run_name="gpu_check")["notebook_script"](path)
    assert "%matplotlib" not in script and "!pip" not in script and "title" not in script
    assert script.index("x = 1") < script.index("print(x + 1)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.stdout == "2\n", out.stderr


def test_smoke_run_writes_a_report_of_every_part(tmp_path):
    report = tmp_path / "report.md"
    out = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--smoke",
            "--report",
            str(report),
            "--notebooks",
            "01_mse_toy_gradient_descent",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    text = report.read_text()
    assert text.startswith("# GPU check: none (CPU), ")
    for part in ("presets", "speed, checkpointing off", "speed, checkpointing on", "notebook 01"):
        assert f"| {part} | ok |" in text, text[:2000]
    for preset in ("t4", "mid-gpu", "large-gpu"):
        assert f"| {preset} |" in text
