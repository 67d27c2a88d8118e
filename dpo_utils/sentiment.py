"""The controlled-sentiment experiment of notebook 07, a miniature of the DPO paper's IMDb task.

The reference model writes several movie reviews per prompt; VADER's compound score is the
ground-truth reward; for each prompt the most positive sample becomes ``chosen`` and the least
positive ones ``rejected``. Rows are written in TRL's conversational preference format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


def load_prompts(path, split: str) -> list[list[dict]]:
    """Prompts (message lists) of one ``split`` ("train" or "test") from a JSONL file."""
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts = [row["prompt"] for row in rows if row["split"] == split]
    if not prompts:
        raise ValueError(f"{path}: no prompts with split={split!r}")
    return prompts


def build_preference_rows(prompts, samples, rewards, pairs_per_prompt: int = 2, min_gap: float = 0.1) -> list[dict]:
    """Pair the best sample of each prompt with its ``pairs_per_prompt`` worst ones.

    ``samples`` are ``(prompt_index, _, _, text)`` tuples from
    :func:`dpo_utils.evaluation.sample_completions`, ``rewards`` their scores. Pairs whose reward
    gap is below ``min_gap``, or whose texts are identical or empty, are left out.
    """
    by_prompt: dict[int, list[tuple[float, str]]] = {}
    for (index, *_, text), reward in zip(samples, rewards):
        if text.strip():
            by_prompt.setdefault(index, []).append((reward, text.strip()))
    rows = []
    for index, scored in sorted(by_prompt.items()):
        scored.sort(key=lambda pair: pair[0], reverse=True)
        best_reward, best_text = scored[0]
        for worst_reward, worst_text in scored[::-1][:pairs_per_prompt]:
            if best_reward - worst_reward >= min_gap and worst_text != best_text:
                rows.append(
                    {
                        "prompt": prompts[index],
                        "chosen": [{"role": "assistant", "content": best_text}],
                        "rejected": [{"role": "assistant", "content": worst_text}],
                        "score_chosen": best_reward,
                        "score_rejected": worst_reward,
                    }
                )
    return rows


@dataclass
class SampledPairs:
    """What :func:`sample_score_and_pair` made, step by step."""

    samples: list  # (prompt_index, prompt_ids, completion_ids, text), from sample_completions
    rewards: list[float]  # one per sample
    rows: list[dict]  # best against worst, TRL's conversational format plus score_chosen / score_rejected
    path: Path  # where the rows were saved as JSONL
    pairs: list  # the saved file tokenized: TokenizedPair objects
    report: object  # prepare_preference_data's SkipReport


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
) -> SampledPairs:
    """Notebook 07's pipeline: sample ``n_samples`` completions per prompt from ``model`` (``seed``),
    score them with ``reward_fn`` (default: VADER), pair each prompt's best with its
    ``pairs_per_prompt`` worst (:func:`build_preference_rows`), save the rows as JSONL at ``path``
    and tokenize that file (completions up to ``max_new_tokens + 1`` tokens, room for EOS)."""
    from dpo_utils.data import prepare_preference_data, save_preference_jsonl
    from dpo_utils.evaluation import sample_completions, vader_reward

    samples = sample_completions(model, tokenizer, prompts, n_samples, max_new_tokens, seed=seed)
    rewards = (reward_fn or vader_reward)([text for *_, text in samples])
    rows = build_preference_rows(prompts, samples, rewards, pairs_per_prompt=pairs_per_prompt, min_gap=min_gap)
    save_preference_jsonl(rows, path)
    pairs, report = prepare_preference_data(
        path, tokenizer, max_prompt_length=max_prompt_length, max_completion_length=max_new_tokens + 1
    )
    return SampledPairs(samples, rewards, rows, Path(path), pairs, report)
