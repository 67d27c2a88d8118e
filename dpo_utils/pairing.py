"""Preference pairs from scored samples: each prompt's best sample against its worst.

Used by notebook 07's pairs (:mod:`dpo_utils.sentiment`) and by every round of iterative DPO
(:mod:`dpo_utils.iterative`). Rows come out in TRL's conversational preference format, with the
two scores kept as ``score_chosen`` and ``score_rejected``. A sample cut at the token cap can be
left out first (:func:`dpo_utils.sampling.ended`): a JSONL row cannot say "this text was cut".
"""

from __future__ import annotations

from dpo_utils.sampling import ended


def build_preference_rows(
    prompts, samples, rewards, pairs_per_prompt: int = 2, min_gap: float = 0.1, eos_token_id: int | None = None
) -> list[dict]:
    """Pair the best sample of each prompt with its ``pairs_per_prompt`` worst ones.

    ``samples`` come from :func:`dpo_utils.sampling.sample_completions`, ``rewards`` are their
    scores. Pairs whose reward gap is below ``min_gap``, or whose texts are identical or empty, are
    left out. Given
    ``eos_token_id``, samples cut at the token cap (no end token) are left out too.
    """
    by_prompt: dict[int, list[tuple[float, str]]] = {}
    for sample, reward in zip(samples, rewards):
        index, text = sample.prompt_index, sample.text
        if eos_token_id is not None and not ended(sample, eos_token_id):
            continue
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


def best_vs_worst_rows(prompts, samples, rewards, min_gap: float = 0.1, eos_token_id: int | None = None) -> list[dict]:
    """One pair per prompt: its highest-reward sample against its lowest.

    ``samples`` come from :func:`dpo_utils.sampling.sample_completions`. A prompt gets no pair when it has fewer than
    two distinct non-empty texts, or when best and worst are tied or closer than ``min_gap``
    (a tie never yields a pair, even with ``min_gap=0``: there is no preference to learn).
    Given ``eos_token_id``, samples cut at the token cap are left out first.
    """
    if min_gap < 0:
        raise ValueError(f"min_gap={min_gap} must be >= 0")
    rows = build_preference_rows(prompts, samples, rewards, 1, min_gap, eos_token_id=eos_token_id)
    return [row for row in rows if row["score_chosen"] > row["score_rejected"]]
