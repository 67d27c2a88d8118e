"""Benchmark one DPO training step: dpo_utils against TRL's DPOTrainer, same model, same batch.

    python benchmarks/dpo_step.py                # all configurations, a table at the end
    python benchmarks/dpo_step.py --steps 10     # more timed steps

Each configuration runs in its own subprocess (so peak memory is its own) on the bundled
SmolLM2-135M-Instruct with ``--pairs`` preference pairs of ~``--prompt-tokens`` prompt and
~``--completion-tokens`` completion tokens, trained on that same batch every step with constant
learning rate, AdamW and clipping at 1.0. Reported per configuration:

- seconds per step (median over the timed steps, after one warm-up step) and tokens/s, where
  tokens = prompt + completion tokens of the chosen and the rejected sequence of every pair,
  counted from dpo_utils' tokenization for every configuration;
- one-off set-up time for precomputing reference log-probs, where the configuration does that;
- peak memory: RSS on CPU, ``torch.cuda.max_memory_allocated`` on GPU;
- the DPO loss on the batch after training, computed for every configuration by the same
  dpo_utils code: they must agree, or the configurations did not train the same thing.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time

CONFIGS = {
    "dpo_utils": "reference precomputed, one forward, prompt shared, LM head on completion tokens only",
    "dpo_utils-compile": "as dpo_utils, with the decoder torch.compile'd (GPU default set only)",
    "dpo_utils-no-sharing": "as dpo_utils, without prompt sharing",
    "dpo_utils-full-logits": "as dpo_utils-no-sharing, with logits at every position",
    "trl-default": "TRL DPOTrainer defaults (reference model forward every step)",
    "trl-precompute": "TRL DPOTrainer, precompute_ref_log_probs=True",
}
WORDS = ("film story actor scene light music camera night city river house friend voice plot ending "
         "character dialogue moment colour silence crowd window winter summer journey ocean").split()


def make_rows(n_pairs, prompt_tokens, completion_tokens, seed=0):
    """Deterministic plain-text pairs; one word is roughly one token for this tokenizer."""
    rng = random.Random(seed)
    words = lambda n: " ".join(rng.choice(WORDS) for _ in range(n))
    return [{"prompt": f"Review {i}: {words(prompt_tokens - 4)}.", "chosen": " " + words(completion_tokens - 1),
             "rejected": " " + words(completion_tokens - 1)} for i in range(n_pairs)]


def peak_memory_mb():
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_dpo_utils(model, tokenizer, pairs, args, name):
    from dpo_utils.trainer import DPOConfig, DPOTrainer

    config = DPOConfig(beta=0.1, learning_rate=args.lr, batch_size=len(pairs), max_steps=args.steps + 1,
                       share_prompt=name in ("dpo_utils", "dpo_utils-compile"), lean_logits=name != "dpo_utils-full-logits",
                       logits_chunk_size=args.chunk_size, compile=name == "dpo_utils-compile")
    trainer = DPOTrainer(model, tokenizer, pairs, config)
    start = time.perf_counter()
    trainer.ensure_reference_logps()
    setup = time.perf_counter() - start
    times = []
    for _ in range(args.steps + 1):
        start = time.perf_counter()
        trainer.train_step()
        times.append(time.perf_counter() - start)
    return times[1:], setup


def run_trl(model, tokenizer, rows, args, precompute):
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.start = [], None

        def on_step_begin(self, *_, **__):
            self.start = time.perf_counter()

        def on_step_end(self, *_, **__):
            self.times.append(time.perf_counter() - self.start)

    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out:
        config = DPOConfig(output_dir=out, per_device_train_batch_size=len(rows), max_steps=args.steps + 1,
                           learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0,
                           beta=0.1, report_to="none", logging_steps=1, save_strategy="no", seed=0,
                           precompute_ref_log_probs=precompute, use_cpu=not _cuda(), bf16=_cuda(),
                           dataloader_drop_last=False)
        trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer, callbacks=[timer])
        start = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - start
    return timer.times[1:], total - sum(timer.times)


def _cuda():
    import torch

    return torch.cuda.is_available()


def worker(name, args):
    import torch

    from dpo_utils.data import prepare_preference_data
    from dpo_utils.losses import dpo_loss
    from dpo_utils.models import load_model_and_tokenizer
    from dpo_utils.trainer import batch_logprobs

    torch.manual_seed(0)
    model, tokenizer = load_model_and_tokenizer(args.model)
    rows = make_rows(args.pairs, args.prompt_tokens, args.completion_tokens)
    pairs, _ = prepare_preference_data(rows, tokenizer, max_prompt_length=4 * args.prompt_tokens,
                                       max_completion_length=4 * args.completion_tokens)
    tokens = sum(2 * len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    with torch.no_grad():
        ref_chosen, ref_rejected, _ = batch_logprobs(model, pairs, tokenizer.pad_token_id, mode="lean")
    if name.startswith("dpo_utils"):
        times, setup = run_dpo_utils(model, tokenizer, pairs, args, name)
    else:
        times, setup = run_trl(model, tokenizer, rows, args, precompute=name == "trl-precompute")
    model.eval()
    with torch.no_grad():
        chosen, rejected, _ = batch_logprobs(model, pairs, tokenizer.pad_token_id, mode="lean")
    final_loss = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=0.1).losses.mean().item()
    step = statistics.median(times)
    return {"config": name, "s_per_step": step, "tokens_per_s": tokens / step, "tokens_per_step": tokens,
            "setup_s": setup, "peak_mb": peak_memory_mb(), "final_loss": final_loss,
            "params": sum(p.numel() for p in model.parameters())}


def mfu(result, args):
    """Model FLOPs utilisation on GPU: 6 N tokens for the policy (+2 N tokens for a reference forward)."""
    import torch

    if not torch.cuda.is_available() or not args.peak_tflops:
        return None
    per_token = 6 + (2 if result["config"] == "trl-default" else 0)
    return per_token * result["params"] * result["tokens_per_s"] / (args.peak_tflops * 1e12)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=None, choices=list(CONFIGS),
                        help="default: all; dpo_utils-compile only on a GPU (fused AdamW is on by default there)")
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up step)")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--completion-tokens", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--chunk-size", type=int, default=256, help="dpo_utils: completion positions per LM-head chunk")
    parser.add_argument("--peak-tflops", type=float, default=None, help="GPU dense bf16 peak, for MFU (H100 SXM: 989)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args)))
        return
    results = []
    args.configs = args.configs or [c for c in CONFIGS if c != "dpo_utils-compile" or _cuda()]
    for name in args.configs:
        options = {k: v for k, v in vars(args).items() if k not in ("configs", "worker") and v is not None}
        cmd = [sys.executable, __file__, "--worker", name] + [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
        out = subprocess.run(cmd, capture_output=True, text=True)
        line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
        if not line:
            print(f"{name} failed:\n{out.stderr[-3000:]}")
            continue
        results.append(json.loads(line[0][7:]))
        print(f"done: {name}", flush=True)
    print(f"\n{'config':24s} {'s/step':>8s} {'tokens/s':>9s} {'setup s':>8s} {'peak MB':>8s} {'final loss':>11s}")
    for r in results:
        print(f"{r['config']:24s} {r['s_per_step']:8.2f} {r['tokens_per_s']:9.0f} {r['setup_s']:8.1f} {r['peak_mb']:8.0f} {r['final_loss']:11.5f}")
    base = {r["config"]: r for r in results}
    if "dpo_utils" in base:
        for other in ("trl-default", "trl-precompute"):
            if other in base:
                print(f"dpo_utils vs {other}: {base['dpo_utils']['tokens_per_s'] / base[other]['tokens_per_s']:.2f}x tokens/s, "
                      f"{base['dpo_utils']['peak_mb'] / base[other]['peak_mb']:.2f}x peak memory")


if __name__ == "__main__":
    main()
