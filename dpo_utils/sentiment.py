"""The controlled-sentiment experiment of notebook 07, a miniature of the DPO paper's IMDb task.

The reference model writes several movie reviews per prompt; VADER's compound score is the
ground-truth reward; for each prompt the most positive sample becomes ``chosen`` and the least
positive ones ``rejected``. Rows are written in TRL's conversational preference format.

A sample that stopped at the token cap, not at end-of-sequence, is dropped before pairing. A
JSONL row cannot say "this text was cut", and tokenization (ours, like TRL's) closes every
completion with the end token, so a cut text kept in the file would teach the model to stop
mid-sentence, in any trainer that reads the file.

``python -m dpo_utils.sentiment OUT.jsonl`` rebuilds the shipped pairs (see ``data/README.md``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from dpo_utils.data import prepare_preference_data
from dpo_utils.pairing import build_preference_rows
from dpo_utils.preference_rows import save_preference_jsonl
from dpo_utils.rewards import vader_reward
from dpo_utils.runtime.config import DATA_DIR
from dpo_utils.runtime.models import DEFAULT_MODEL, load_model_and_tokenizer
from dpo_utils.sampling import ended, sample_completions


def load_prompts(path, split: str) -> list[list[dict]]:
    """Prompts (message lists) of one ``split`` ("train" or "test") from a JSONL file."""
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts = [row["prompt"] for row in rows if row["split"] == split]
    if not prompts:
        raise ValueError(f"{path}: no prompts with split={split!r}")
    return prompts


@dataclass
class SampledPairs:
    """What :func:`sample_score_and_pair` made, step by step."""

    samples: list  # Sample tuples, from sample_completions
    rewards: list[float]  # one per sample
    rows: list[dict]  # best against worst, TRL's conversational format plus score_chosen / score_rejected
    path: Path  # where the rows were saved as JSONL
    pairs: list  # the saved file tokenized: TokenizedPair objects
    report: object  # prepare_preference_data's SkipReport
    capped: int = 0  # samples cut at the token cap
    capped_kept: bool = False  # True: they could still be paired (keep_capped=True)

    def describe(self) -> str:
        """One line: samples, how many stopped at the cap, pairs made."""
        share = self.capped / max(1, len(self.samples))
        fate = "kept" if self.capped_kept else "left out"
        cut = f"{self.capped} ({share:.0%}) cut at the token cap and {fate}"
        return f"{len(self.samples)} samples, {cut}; {len(self.rows)} pairs"


def sample_score_and_pair(
    model,
    tokenizer,
    prompts,
    n_samples: int,
    max_new_tokens: int,
    path,
    seed: int = 0,
    reward_fn=None,
    pairs_per_prompt: int = 2,
    min_gap: float = 0.1,
    max_prompt_length: int = 128,
    keep_capped: bool = False,
    batch_size: int = 16,
) -> SampledPairs:
    """Notebook 07's pipeline: sample ``n_samples`` completions per prompt from ``model`` (``seed``),
    score them with ``reward_fn`` (default: VADER), drop the samples cut at ``max_new_tokens``
    (unless ``keep_capped``), pair each prompt's best with its ``pairs_per_prompt`` worst
    (:func:`build_preference_rows`), save the rows as JSONL at ``path`` and tokenize that file
    (completions up to ``max_new_tokens + 1`` tokens, room for EOS). ``batch_size``: samples generated at once."""
    samples = sample_completions(
        model, tokenizer, prompts, n_samples, max_new_tokens, seed=seed, batch_size=batch_size
    )
    rewards = (reward_fn or vader_reward)([sample.text for sample in samples])
    eos = None if keep_capped else tokenizer.eos_token_id
    rows = build_preference_rows(prompts, samples, rewards, pairs_per_prompt, min_gap, eos_token_id=eos)
    capped = sum(not ended(sample, tokenizer.eos_token_id) for sample in samples)
    if not rows:
        raise ValueError(
            f"no preference pairs from {len(samples)} samples: {capped} stopped at max_new_tokens="
            f"{max_new_tokens} and are left out. Raise max_new_tokens or n_samples."
        )
    save_preference_jsonl(rows, path)
    pairs, report = prepare_preference_data(
        path, tokenizer, max_prompt_length=max_prompt_length, max_completion_length=max_new_tokens + 1
    )
    return SampledPairs(samples, rewards, rows, Path(path), pairs, report, capped, keep_capped)


def main(argv=None) -> None:
    """Rebuild the shipped pairs: reference samples for every train prompt, capped ones dropped."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("out", help="where to write the JSONL pairs")
    parser.add_argument("--samples", type=int, default=8, help="samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model, tokenizer = load_model_and_tokenizer(DEFAULT_MODEL)
    prompts = load_prompts(DATA_DIR / "movie_review_prompts.jsonl", "train")
    made = sample_score_and_pair(model, tokenizer, prompts, args.samples, args.max_new_tokens, args.out, args.seed)
    print(f"{len(prompts)} prompts: {made.describe()}")


if __name__ == "__main__":
    main()
