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

from dpo_utils import sampling
from dpo_utils.runtime.config import DATA_DIR
from dpo_utils.runtime.models import DEFAULT_MODEL, load_model_and_tokenizer
from dpo_utils.sampling import hit_the_cap, sample_completions
from dpo_utils.sentiment import load_prompts


def generate_rows(model, input_ids, attention_mask, max_new_tokens, tokenizer, guard=None):
    """The same sampling through ``model.generate``, which keeps finished rows in the batch (for --compare)."""
    out = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=1.0,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
    )
    rows = out[:, input_ids.shape[1] :].tolist()
    eos = tokenizer.eos_token_id
    return [
        row[: row.index(eos) + 1] if eos in row else [t for t in row if t != tokenizer.pad_token_id] for row in rows
    ]


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
    parser.add_argument("--compare", action="store_true", help="also time model.generate (finished rows kept)")
    args = parser.parse_args(argv)
    model, tokenizer = load_model_and_tokenizer(args.model)
    prompts = load_prompts(DATA_DIR / "movie_review_prompts.jsonl", "test")[: args.prompts]
    print(
        f"{len(prompts)} prompts x {args.samples} samples, at most {args.max_new_tokens} tokens; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"{'sampling':>10s} {'batch':>5s} {'seconds':>8s} {'compl/s':>8s} {'tokens/s':>9s} {'mean tok':>9s} "
        f"{'cut':>5s}"
    )
    ways = {"rows leave": sampling.sample_rows} | ({"generate": generate_rows} if args.compare else {})
    for (way, rows_fn), batch_size in ((w, b) for b in args.batch_sizes for w in ways.items()):
        sampling.sample_rows = rows_fn  # sample_completions calls the module's sample_rows
        r = time_sampling(model, tokenizer, prompts, args.samples, args.max_new_tokens, batch_size)
        print(f"{way:>10s} ", end="")
        print(
            f"{r['batch']:5d} {r['seconds']:8.1f} {r['completions/s']:8.2f} {r['tokens/s']:9.1f} "
            f"{r['mean tokens']:9.1f} {r['cut']:5.0%}"
        )


if __name__ == "__main__":
    main()
