"""benchmarks/gpu_presets.py runs each GPU preset's code path (precision, LoRA or full, checkpointing) end to end."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_presets.py"


def test_gpu_presets_script_trains_every_preset_at_tiny_shapes(tmp_path):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--shrink", "--steps", "2", "--json", str(tmp_path / "r.json")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    results = {r["preset"]: r for r in json.loads((tmp_path / "r.json").read_text())}
    assert set(results) == {"t4", "mid-gpu", "large-gpu"}, out.stdout
    for name, r in results.items():
        assert r["losses_finite"] and r["skipped"] < 2, r
        assert r["changed"] > (0.4 if name == "t4" else 0.99), r  # LoRA: only B moves on the first step


# Loads the script as a module with no GPU device file to find, runs it without --shrink, and
# reports what it said and whether it got as far as importing torch.
WITHOUT_A_GPU = """
import runpy, sys
script = runpy.run_path(sys.argv[1], run_name="gpu_presets")
script["main"].__globals__["GPU_DEVICE_FILES"] = ()
try:
    script["main"]([])
except SystemExit as stop:
    print("exit:", stop.code)
print("torch imported:", "torch" in sys.modules)
"""


def test_without_a_gpu_it_says_so_before_importing_torch():
    out = subprocess.run(
        [sys.executable, "-c", WITHOUT_A_GPU, str(SCRIPT)], capture_output=True, text=True, timeout=120
    )
    assert "exit: no GPU found" in out.stdout and "--shrink" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "torch imported: False" in out.stdout
