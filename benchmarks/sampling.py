"""Benchmark sampling, the evaluation's cost: completions of the held-out prompts per second.

    python benchmarks/sampling.py                                  # 48 prompts x 1 sample, batches of 16 and 48
    python benchmarks/sampling.py --batch-sizes 48 96 192 --samples 4 --max-new-tokens 128

Each batch size samples the same prompts with the same seed from the offline SmolLM2-135M-Instruct
(the Q4_1-quantised GGUF, dequantised to fp32) or ``--model``. Reported per batch size: seconds in
all, completions per second, tokens generated per second (completion tokens, EOS included), the mean
completion length and the share of completions cut at ``--max-new-tokens``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dpo_utils.runtime.config import DATA_DIR
from dpo_utils.runtime.models import DEFAULT_MODEL, load_model_and_tokenizer
from dpo_utils.sampling import hit_the_cap, sample_completions
from dpo_utils.sentiment import load_prompts


def time_sampling(model, tokenizer, prompts, samples: int, max_new_tokens: int, batch_size: int) -> dict:
    start = time.perf_counter()
    made = sample_completions(model, tokenizer, prompts, samples, max_new_tokens, seed=1, batch_size=batch_size)
    seconds = time.perf_counter() - start
    lengths = [len(sample.completion_ids) for sample in made]
    cut = [hit_the_cap(sample.completion_ids, tokenizer.eos_token_id, max_new_tokens) for sample in made]
    return {
        "batch": batch_size,
        "seconds": seconds,
        "completions/s": len(made) / seconds,
        "tokens/s": sum(lengths) / seconds,
        "mean tokens": statistics.fmean(lengths),
        "cut": statistics.fmean(cut),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--prompts", type=int, default=48, help="held-out prompts")
    parser.add_argument("--samples", type=int, default=1, help="samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 48])
    args = parser.parse_args(argv)
    model, tokenizer = load_model_and_tokenizer(args.model)
    prompts = load_prompts(DATA_DIR / "movie_review_prompts.jsonl", "test")[: args.prompts]
    print(
        f"{len(prompts)} prompts x {args.samples} samples, at most {args.max_new_tokens} tokens; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"{'batch':>5s} {'seconds':>8s} {'compl/s':>8s} {'tokens/s':>9s} {'mean tok':>9s} {'cut':>5s}")
    for batch_size in args.batch_sizes:
        r = time_sampling(model, tokenizer, prompts, args.samples, args.max_new_tokens, batch_size)
        print(
            f"{r['batch']:5d} {r['seconds']:8.1f} {r['completions/s']:8.2f} {r['tokens/s']:9.1f} "
            f"{r['mean tokens']:9.1f} {r['cut']:5.0%}"
        )


if __name__ == "__main__":
    main()
