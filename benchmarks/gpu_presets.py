"""Check notebook 08's GPU presets on a GPU, offline: does each preset's step fit its card and train?

    python benchmarks/gpu_presets.py                      # every GPU preset, full shapes, memory capped per card
    python benchmarks/gpu_presets.py --presets t4 --json t4.json   # results also in runs/benchmarks/t4.json
    python benchmarks/gpu_presets.py --shrink             # tiny shapes: the same code path on a CPU (tests)

Without a GPU (and without ``--shrink``) it says so at once and stops, before importing torch.

No hub is needed: each preset's model is built from its architecture's config shipped in the
repository (:mod:`dpo_utils.runtime.architectures`), with random weights (speed and memory depend on
the shapes only) and the bundled SmolLM2 tokenizer. Each preset runs in its own process with
memory capped at its smallest card (``torch.cuda.set_per_process_memory_fraction``), at the
preset's precision, LoRA or full fine-tuning, micro-batch, lengths (every prompt and completion
at its maximum) and learning rate, and prints:

- peak memory (``torch.cuda.max_memory_allocated``) against the card and the estimate of
  :mod:`dpo_utils.runtime.memory`;
- seconds per optimizer step (``batch_size`` pairs, accumulated over micro-batches; median of the
  timed steps after one warm-up step);
- whether every loss was finite and how many steps were skipped (fp16 loss scaling skips a few
  at first while it finds its scale);
- the share of trained weight elements that one step changed (fp32 master weights: ~100 %).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
GPU_PRESETS = ("t4", "mid-gpu", "large-gpu")
# Device files a CUDA (NVIDIA, or ROCm's HIP) GPU gives a process: looked for before torch is imported
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")
NO_GPU = "no GPU found: the presets are sized for GPUs; `--shrink` runs the same code path at tiny shapes on the CPU"


def gpu_visible() -> bool:
    """Cheap: does this machine show a GPU device file? (torch.cuda then says whether it is usable.)"""
    return any(Path(path).exists() for path in GPU_DEVICE_FILES)


def results_path(name: str | None) -> Path:
    """``runs/benchmarks/<name>`` (a path with a folder is kept as given), or a dated name by default."""
    from dpo_utils.runtime.config import RUNS_DIR

    if name is None:
        name = time.strftime("gpu_presets-%Y%m%d-%H%M%S.json")
    path = Path(name)
    return path if path.parent != Path(".") else RUNS_DIR / "benchmarks" / path


def synthetic_pairs(preset, vocab: int, n: int, seed: int = 0):
    """``n`` pairs with every prompt and completion at the preset's maximum length."""
    import torch

    from dpo_utils.data import TokenizedPair

    gen = torch.Generator().manual_seed(seed)
    ids = lambda k: torch.randint(100, vocab, (k,), generator=gen).tolist()
    return [
        TokenizedPair(
            ids(preset.max_prompt_length),
            ids(preset.max_completion_length - 1) + [2],
            ids(preset.max_completion_length - 1) + [2],
        )
        for _ in range(n)
    ]


def measure(name: str, steps: int, shrink: bool) -> dict:
    """Train one preset for ``steps`` optimizer steps in this process; return its measurements."""
    import torch

    from dpo_utils.lora import attach_lora
    from dpo_utils.runtime.architectures import random_model_and_tokenizer
    from dpo_utils.runtime.memory import GIB
    from dpo_utils.runtime.precision import fraction_changed, trainable_copy
    from dpo_utils.runtime.presets import PRESETS, preset_memory
    from dpo_utils.trainer import DPOConfig, DPOTrainer

    preset = PRESETS[name]
    overrides = {}
    if shrink:
        preset = replace(preset, max_prompt_length=16, max_completion_length=16, batch_size=2, micro_batch_size=1)
        overrides = dict(
            num_hidden_layers=1,
            hidden_size=64,
            intermediate_size=128,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=49152,
        )  # still the architecture's code, at a tiny size
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, preset.card_memory_gib * GIB / total))
        torch.cuda.reset_peak_memory_stats()
    model, tokenizer = random_model_and_tokenizer(
        preset.architecture, dtype=getattr(torch, preset.dtype), device=device, **overrides
    )
    policy = attach_lora(model, rank=preset.lora_rank) if preset.lora_rank else model.requires_grad_(True)
    config = DPOConfig(
        beta=preset.beta,
        learning_rate=preset.learning_rate,
        batch_size=preset.batch_size,
        micro_batch_size=preset.micro_batch_size,
        max_steps=steps,
        mixed_precision=preset.mixed_precision,
        activation_checkpointing=preset.activation_checkpointing,
    )
    trainer = DPOTrainer(
        policy, tokenizer, synthetic_pairs(preset, model.config.vocab_size, preset.batch_size), config
    )
    trainer.ensure_reference_logps()
    seconds, rows, changed = [], [], []
    for _ in range(steps):
        before = trainable_copy(policy)
        start = time.perf_counter()
        rows.append(trainer.train_step())
        if device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
        changed.append(fraction_changed(before, policy))
    applied = [c for c, row in zip(changed, rows) if not row["skipped"]]
    return {
        "preset": name,
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "card_gib": preset.card_memory_gib,
        "estimate_gib": preset_memory(preset)["total"] / GIB,
        "peak_gib": torch.cuda.max_memory_allocated() / GIB if device == "cuda" else float("nan"),
        "seconds_per_step": statistics.median(seconds[1:] or seconds),
        "losses_finite": all(map(_finite, rows)),
        "skipped": sum(row["skipped"] for row in rows),
        "changed": statistics.fmean(applied) if applied else 0.0,
        "steps": steps,
        "shrunk": shrink,
    }


def _finite(row: dict) -> bool:
    return row["skipped"] or math.isfinite(row["loss"])


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(GPU_PRESETS), choices=GPU_PRESETS)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument(
        "--shrink", action="store_true", help="tiny shapes (1 layer, hidden 64, 16+16 tokens): a CPU smoke test"
    )
    parser.add_argument(
        "--json",
        help="where to write the results (a bare file name: into runs/benchmarks/; "
        "default runs/benchmarks/gpu_presets-<date>-<time>.json)",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one preset in this process
    args = parser.parse_args(argv)
    if args.one:
        print("RESULT " + json.dumps(measure(args.one, args.steps, args.shrink)))
        return []
    if not args.shrink and not gpu_visible():
        sys.exit(NO_GPU)
    print("measuring " + ", ".join(args.presets) + (" (shrunk shapes)" if args.shrink else ""), flush=True)
    import torch

    if not args.shrink and not torch.cuda.is_available():
        sys.exit(f"{NO_GPU} (torch {torch.__version__} sees no CUDA device)")
    results = []
    for name in args.presets:  # one process each: its own peak memory and memory cap
        command = [sys.executable, __file__, "--one", name, "--steps", str(args.steps)] + (
            ["--shrink"] if args.shrink else []
        )
        out = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        results.append(
            json.loads(lines[-1][7:]) if lines else {"preset": name, "error": out.stderr.strip().splitlines()[-1:]}
        )
    print(
        f"torch {torch.__version__}, {results[0].get('device', '?')}; {args.steps} steps per preset"
        + (" (shrunk shapes)" if args.shrink else "")
    )
    print(
        f"{'preset':10} {'card GiB':>8} {'estimate':>8} {'peak GiB':>8} {'s/step':>7} "
        f"{'finite':>6} {'skipped':>7} {'changed':>8}"
    )
    for r in results:
        if "error" in r:
            print(f"{r['preset']:10} failed: {r['error']}")
            continue
        print(
            f"{r['preset']:10} {r['card_gib']:8.1f} {r['estimate_gib']:8.1f} {r['peak_gib']:8.1f} "
            f"{r['seconds_per_step']:7.2f} {str(r['losses_finite']):>6} {r['skipped']:7d} {100 * r['changed']:7.2f}%"
        )
    path = results_path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    print(f"written: {path}")
    return results


if __name__ == "__main__":
    main()
