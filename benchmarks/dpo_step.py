"""Benchmark one DPO training step: dpo_utils against TRL's DPOTrainer, same model, same batch.

    python benchmarks/dpo_step.py                     # quick: dpo_utils vs TRL-precompute, 4 pairs, 2 timed steps
    python benchmarks/dpo_step.py --configs all --lengths fixed lognormal --pairs 8 --steps 5   # every configuration
    python benchmarks/dpo_step.py --checkpointing on  # activation checkpointing in every configuration
    python benchmarks/dpo_step.py --model qwen2.5-0.5b --json qwen.json   # a random-initialised architecture

The results (settings, environment, table) are also written as JSON into ``runs/benchmarks/``.

Each configuration runs in its own subprocess (so peak memory is its own), trained on the same
``--pairs`` preference pairs every step with constant learning rate, AdamW and clipping at 1.0.
``--model`` is a hub id or folder (offline: the bundled SmolLM2-135M-Instruct) or one of the
architecture names of :mod:`dpo_utils.runtime.architectures` (random weights from seed 0, the bundled
SmolLM2 tokenizer). Batches (``--lengths``):

- ``fixed``: every prompt ~``--prompt-tokens`` and every completion ~``--completion-tokens`` long;
- ``lognormal``: lengths drawn from a log-normal with those means and ``--length-sigma`` spread
  in log space (0.6: the middle 90 % of lengths span a factor of 7), clipped to [4, 6 x mean];
- ``shipped``: the prompt and completion lengths of ``data/sentiment_pairs.jsonl`` (tokenized),
  scaled to those means (a narrow spread: its completions were generated to one length cap).

Reported per configuration and batch:

- seconds per step (median over the timed steps, after one warm-up step) and tokens/s, where
  tokens = prompt + completion tokens of the chosen and the rejected sequence of every pair
  (padding not counted), counted from dpo_utils' tokenization for every configuration;
- CPU seconds per step (all threads of the process, ``time.process_time``): on a machine shared
  with other work, less disturbed than wall time by waiting for a core;
- one-off set-up time (reference log-probs), where the configuration has one;
- peak memory: RSS on CPU, ``torch.cuda.max_memory_allocated`` on GPU;
- MFU on a GPU whose peak is known (or given with ``--peak-tflops``): 6 N tokens/s / peak, where
  N counts the parameters used in matrix products per token: all parameters except the input
  embedding table, a tied embedding counted once (as the LM head). Attention score FLOPs, the
  recomputation of activation checkpointing and a reference forward are not counted, so MFU is
  tokens/s in other units: the same work credited to every configuration;
- the DPO loss on the batch after training, computed for every configuration by the same
  dpo_utils code: they must agree, or the configurations did not train the same thing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIGS = {
    "dpo_utils-padding-free": (
        "as dpo_utils, always packed without padding (block-diagonal attention), prompt shared in each pack"
    ),
    "dpo_utils": (
        "the defaults: reference precomputed, one forward, LM head on completion tokens only, prompt shared "
        "through a KV cache or in packed rows, whichever computes less padding (logprob_mode='auto')"
    ),
    "dpo_utils-compile": "as dpo_utils, with the decoder torch.compile'd (GPU default set only)",
    "dpo_utils-no-sharing": "as dpo_utils, padded sequences without prompt sharing",
    "dpo_utils-full-logits": "as dpo_utils-no-sharing, with logits at every position",
    "trl-default": "TRL DPOTrainer defaults (reference model forward every step)",
    "trl-precompute": "TRL DPOTrainer, precompute_ref_log_probs=True",
}
LOGPROB_MODES = {  # DPOConfig.logprob_mode of each dpo_utils configuration
    "dpo_utils": "auto",
    "dpo_utils-compile": "auto",
    "dpo_utils-padding-free": "packed",
    "dpo_utils-no-sharing": "lean",
    "dpo_utils-full-logits": "full",
}
QUICK_CONFIGS = ["dpo_utils", "trl-precompute"]  # the default: one comparison, a few minutes on a laptop CPU
LENGTHS = ("fixed", "lognormal", "shipped")
# Dense bf16/fp16 peak TFLOP/s (no sparsity), by a word in torch.cuda.get_device_name()
PEAK_TFLOPS = [
    (r"\bH100\b.*\bPCIe\b", 756.0),
    (r"\bH100\b", 989.0),
    (r"\bH200\b", 989.0),
    (r"\bA100\b", 312.0),
    (r"\bL4\b", 121.0),
    (r"\bT4\b", 65.0),
]
WORDS = (
    "film story actor scene light music camera night city river house friend voice plot ending "
    "character dialogue moment colour silence crowd window winter summer journey ocean"
).split()


def batch_lengths(kind, n_pairs, prompt_tokens, completion_tokens, sigma=0.6, seed=0, tokenizer=None):
    """``(prompt, chosen, rejected)`` lengths in words (~tokens) of ``n_pairs`` pairs."""
    rng = random.Random(seed)
    if kind == "fixed":
        return [(prompt_tokens, completion_tokens, completion_tokens)] * n_pairs
    if kind == "lognormal":  # mean exp(mu + sigma^2 / 2) = the requested mean
        draw = lambda mean: min(max(round(rng.lognormvariate(math.log(mean) - sigma**2 / 2, sigma)), 4), 6 * mean)
        return [(draw(prompt_tokens), draw(completion_tokens), draw(completion_tokens)) for _ in range(n_pairs)]
    if kind == "shipped":
        from dpo_utils.data import prepare_preference_data
        from dpo_utils.preference_rows import load_preference_rows

        rows, _ = load_preference_rows(REPO / "data" / "sentiment_pairs.jsonl")
        pairs, _ = prepare_preference_data(rows, tokenizer, max_prompt_length=10_000, max_completion_length=10_000)
        picked = [rng.choice(pairs) for _ in range(n_pairs)]
        p_scale = prompt_tokens / statistics.mean(len(p.prompt_ids) for p in pairs)
        c_scale = completion_tokens / statistics.mean(
            [len(p.chosen_ids) for p in pairs] + [len(p.rejected_ids) for p in pairs]
        )
        return [
            (
                max(round(len(p.prompt_ids) * p_scale), 5),
                max(round(len(p.chosen_ids) * c_scale), 2),
                max(round(len(p.rejected_ids) * c_scale), 2),
            )
            for p in picked
        ]
    raise ValueError(f"unknown lengths {kind!r}: choose from {LENGTHS}")


def make_rows(lengths, seed=0):
    """Deterministic plain-text pairs of the given word counts; one word is roughly one token here."""
    rng = random.Random(seed)
    words = lambda n: " ".join(rng.choice(WORDS) for _ in range(n))
    return [
        {
            "prompt": f"Review {i}: {words(max(lp - 4, 1))}.",
            "chosen": " " + words(max(lc - 1, 1)),
            "rejected": " " + words(max(lr - 1, 1)),
        }
        for i, (lp, lc, lr) in enumerate(lengths)
    ]


def peak_memory_mb():
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load(args):
    """``(model, tokenizer)`` in float32 on the GPU if there is one (mixed precision runs under autocast)."""
    import torch

    from dpo_utils.runtime.architectures import ARCHITECTURES, random_model_and_tokenizer
    from dpo_utils.runtime.models import load_model_and_tokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.model in ARCHITECTURES:
        return random_model_and_tokenizer(args.model, seed=0, dtype=torch.float32, device=device)
    return load_model_and_tokenizer(args.model, device=device, dtype=torch.float32)


def run_dpo_utils(model, tokenizer, pairs, args, name):
    from dpo_utils.trainer import DPOConfig, DPOTrainer

    config = DPOConfig(
        beta=0.1,
        learning_rate=args.lr,
        batch_size=len(pairs),
        max_steps=args.steps + 1,
        logprob_mode=LOGPROB_MODES[name],
        logits_chunk_size=args.chunk_size,
        compile=name == "dpo_utils-compile",
        activation_checkpointing=args.checkpointing == "on",
    )
    trainer = DPOTrainer(model, tokenizer, pairs, config)
    start = time.perf_counter()
    trainer.ensure_reference_logps()
    setup = time.perf_counter() - start
    times, cpu_times = [], []
    for _ in range(args.steps + 1):
        start, cpu_start = time.perf_counter(), time.process_time()
        trainer.train_step()
        _sync()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return times[1:], cpu_times[1:], setup


def run_trl(model, tokenizer, rows, args, precompute):
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.cpu_times, self.start = [], [], None

        def on_step_begin(self, *_, **__):
            _sync()
            self.start, self.cpu_start = time.perf_counter(), time.process_time()

        def on_step_end(self, *_, **__):
            _sync()
            self.times.append(time.perf_counter() - self.start)
            self.cpu_times.append(time.process_time() - self.cpu_start)

    timer = StepTimer()
    # TRL turns activation checkpointing on by default: set it explicitly, like every configuration
    fields = DPOConfig.__dataclass_fields__
    checkpointing = {
        (
            "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
        ): args.checkpointing == "on"
    }
    with tempfile.TemporaryDirectory() as out:
        config = DPOConfig(
            output_dir=out,
            per_device_train_batch_size=len(rows),
            max_steps=args.steps + 1,
            learning_rate=args.lr,
            lr_scheduler_type="constant",
            warmup_steps=0,
            max_grad_norm=1.0,
            beta=0.1,
            report_to="none",
            logging_steps=1,
            save_strategy="no",
            seed=0,
            precompute_ref_log_probs=precompute,
            use_cpu=not _cuda(),
            bf16=_cuda(),
            dataloader_drop_last=False,
            max_length=None,
            **checkpointing,
        )
        trainer = DPOTrainer(
            model=model,
            args=config,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            callbacks=[timer],
        )
        start = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - start
    return timer.times[1:], timer.cpu_times[1:], total - sum(timer.times)


def _cuda():
    import torch

    return torch.cuda.is_available()


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def matmul_parameters(model) -> int:
    """N of 6 N tokens: parameters used in matrix products per token (input embedding lookup left out,
    a tied embedding counted once, as the LM head)."""
    total = sum(p.numel() for p in model.parameters())  # a tied weight is yielded once
    tied = (
        model.get_output_embeddings() is not None
        and model.get_output_embeddings().weight is model.get_input_embeddings().weight
    )
    return total if tied else total - model.get_input_embeddings().weight.numel()


def worker(name, lengths_kind, args):
    import torch

    from dpo_utils.data import collate_pairs, prepare_preference_data
    from dpo_utils.logprob_modes import batch_logprobs
    from dpo_utils.losses import dpo_loss

    torch.manual_seed(0)
    model, tokenizer = load(args)
    lengths = batch_lengths(
        lengths_kind, args.pairs, args.prompt_tokens, args.completion_tokens, args.length_sigma, tokenizer=tokenizer
    )
    rows = make_rows(lengths)
    longest = max(max(t) for t in lengths)
    pairs, _ = prepare_preference_data(
        rows, tokenizer, max_prompt_length=4 * longest, max_completion_length=4 * longest
    )
    tokens = sum(2 * len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    padded = collate_pairs(pairs, tokenizer.pad_token_id)["input_ids"].numel()
    with torch.no_grad():
        ref_chosen, ref_rejected, _ = batch_logprobs(model, pairs, tokenizer.pad_token_id, mode="lean")
    if name.startswith("dpo_utils"):
        times, cpu_times, setup = run_dpo_utils(model, tokenizer, pairs, args, name)
    else:
        times, cpu_times, setup = run_trl(model, tokenizer, rows, args, precompute=name == "trl-precompute")
    model.eval()
    with torch.no_grad():
        chosen, rejected, _ = batch_logprobs(model, pairs, tokenizer.pad_token_id, mode="lean")
    final_loss = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=0.1).losses.mean().item()
    step = statistics.median(times)
    return {
        "config": name,
        "lengths": lengths_kind,
        "s_per_step": step,
        "step_times": times,
        "cpu_s_per_step": statistics.median(cpu_times),
        "tokens_per_s": tokens / step,
        "tokens_per_step": tokens,
        "padded_tokens_per_step": padded,
        "setup_s": setup,
        "peak_mb": peak_memory_mb(),
        "final_loss": final_loss,
        "params": sum(p.numel() for p in model.parameters()),
        "matmul_params": matmul_parameters(model),
    }


def peak_tflops(args):
    """``(peak, where it came from)``: ``--peak-tflops``, else the table for the detected GPU, else None."""
    if args.peak_tflops:
        return args.peak_tflops, "--peak-tflops"
    if _cuda():
        import torch

        gpu = torch.cuda.get_device_name()
        if known_peak(gpu):
            return known_peak(gpu), f"dense bf16/fp16 peak of the {gpu}"
    return None, None


def known_peak(gpu_name: str) -> float | None:
    """Dense bf16/fp16 peak TFLOP/s of a GPU named like ``torch.cuda.get_device_name()``, if listed."""
    return next((peak for pattern, peak in PEAK_TFLOPS if re.search(pattern, gpu_name)), None)


def mfu(result, peak):
    """Model FLOPs utilisation: 6 N tokens/s over the peak (see the module docstring for N)."""
    if not peak:
        return None
    return 6 * result["matmul_params"] * result["tokens_per_s"] / (peak * 1e12)


def environment(args):
    """Device, versions and settings, printed with the table and stored in the JSON."""
    import torch
    import transformers

    try:
        import trl

        trl_version = trl.__version__
    except ImportError:
        trl_version = None
    if torch.cuda.is_available():
        device = f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    else:
        cpu = (
            next(
                (
                    line.split(":", 1)[1].strip()
                    for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")
                ),
                platform.processor(),
            )
            if Path("/proc/cpuinfo").exists()
            else platform.processor()
        )
        device = f"CPU: {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    settings = {k: v for k, v in vars(args).items() if k not in ("worker", "worker_lengths", "json")}
    return {
        "device": device,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl_version,
        "commit": commit or None,
        "settings": settings,
    }


def print_table(results, env, peak, peak_source):
    print(f"\ndevice: {env['device']}")
    print(
        f"python {env['python']}, torch {env['torch']}, transformers {env['transformers']}, trl {env['trl']}, "
        f"dpo-tutorial {env['commit']}"
    )
    s = env["settings"]
    print(
        f"model {s['model']}, {s['pairs']} pairs a step, "
        f"~{s['prompt_tokens']} prompt / ~{s['completion_tokens']} completion tokens, "
        f"activation checkpointing {s['checkpointing']}, "
        f"median of {s['steps']} steps after a warm-up step, lr {s['lr']}"
    )
    if peak:
        print(
            f"MFU = 6 N tokens/s / {peak:g} TFLOP/s ({peak_source}); "
            f"N = {results[0]['matmul_params']:,} parameters in matmuls"
        )
    for kind in dict.fromkeys(r["lengths"] for r in results):
        rows = [r for r in results if r["lengths"] == kind]
        r0 = rows[0]
        print(f"\n{kind} lengths: {r0['tokens_per_step']} tokens a step ({r0['padded_tokens_per_step']} with padding)")
        print(
            f"{'config':24s} {'s/step':>8s} {'tokens/s':>9s} {'CPU s/step':>10s} "
            f"{'setup s':>8s} {'peak MB':>8s} {'final loss':>11s}" + ("    MFU" if peak else "")
        )
        for r in rows:
            line = (
                f"{r['config']:24s} {r['s_per_step']:8.2f} {r['tokens_per_s']:9.0f} {r['cpu_s_per_step']:10.2f} "
                f"{r['setup_s']:8.1f} {r['peak_mb']:8.0f} {r['final_loss']:11.5f}"
            )
            print(line + (f" {100 * r['mfu']:5.1f}%" if peak else ""))
        by = {r["config"]: r for r in rows}
        ours = [r for r in rows if r["config"].startswith("dpo_utils")]
        if ours:
            best = max(ours, key=lambda r: r["tokens_per_s"])
            for other in ("trl-default", "trl-precompute"):
                if other in by:
                    print(
                        f"{best['config']} vs {other}: "
                        f"{best['tokens_per_s'] / by[other]['tokens_per_s']:.2f}x tokens/s, "
                        f"{best['peak_mb'] / by[other]['peak_mb']:.2f}x peak memory"
                    )


def results_path(name: str | None) -> Path:
    """``runs/benchmarks/<name>`` (a path with a folder is kept as given), or a dated name by default."""
    from dpo_utils.runtime.config import RUNS_DIR

    if name is None:
        name = time.strftime("dpo_step-%Y%m%d-%H%M%S.json")
    path = Path(name)
    return path if path.parent != Path(".") else RUNS_DIR / "benchmarks" / path


def main():
    from dpo_utils.runtime.architectures import ARCHITECTURES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs",
        nargs="+",
        default=QUICK_CONFIGS,
        choices=list(CONFIGS) + ["all"],
        help=f"default: {' '.join(QUICK_CONFIGS)}; all: every configuration (dpo_utils-compile only on a "
        "GPU; fused AdamW is on by default there)",
    )
    parser.add_argument(
        "--model",
        default="HuggingFaceTB/SmolLM2-135M-Instruct",
        help=f"hub id, folder, or a random-initialised architecture: {', '.join(ARCHITECTURES)}",
    )
    parser.add_argument("--lengths", nargs="+", default=["lognormal"], choices=LENGTHS)
    parser.add_argument(
        "--length-sigma", type=float, default=0.6, help="log-normal lengths: standard deviation of log length"
    )
    parser.add_argument(
        "--checkpointing", choices=("on", "off"), default="off", help="activation checkpointing, every configuration"
    )
    parser.add_argument("--steps", type=int, default=2, help="timed steps (after one warm-up step)")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--completion-tokens", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument(
        "--chunk-size", type=int, default=256, help="dpo_utils: completion positions per LM-head chunk"
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="dense bf16 peak for MFU; default: known for H100/H200/A100/L4/T4",
    )
    parser.add_argument(
        "--json",
        help="where to write settings, environment and results (a bare file name: into "
        "runs/benchmarks/; default runs/benchmarks/dpo_step-<date>-<time>.json)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-lengths", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args.worker_lengths, args)))
        return
    if "all" in args.configs:
        args.configs = [c for c in CONFIGS if c != "dpo_utils-compile" or _cuda()]
    peak, peak_source = peak_tflops(args)
    results = []
    for kind in args.lengths:
        for name in args.configs:
            options = {
                k: v
                for k, v in vars(args).items()
                if k not in ("configs", "lengths", "worker", "worker_lengths", "json") and v is not None
            }
            cmd = [sys.executable, __file__, "--worker", name, "--worker-lengths", kind] + [
                f"--{k.replace('_', '-')}={v}" for k, v in options.items()
            ]
            out = subprocess.run(cmd, capture_output=True, text=True)
            line = [text for text in out.stdout.splitlines() if text.startswith("RESULT ")]
            if not line:
                print(f"{name} ({kind} lengths) failed:\n{out.stderr[-3000:]}")
                continue
            result = json.loads(line[0][7:])
            result["mfu"] = mfu(result, peak)
            results.append(result)
            print(f"done: {name}, {kind} lengths: {result['s_per_step']:.2f} s/step", flush=True)
    if not results:
        sys.exit("no configuration ran")
    env = environment(args)
    print_table(results, env, peak, peak_source)
    path = results_path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"environment": env, "peak_tflops": peak, "peak_source": peak_source, "results": results}, indent=1)
    )
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
