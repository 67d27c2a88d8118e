"""Judge completions without a paid API: an open reward model from the hub, or VADER offline;
and the win rate of a tuned model against its reference, with a confidence interval."""

from __future__ import annotations

import statistics

import torch

from dpo_utils.intervals import mean_with_prompt_interval
from dpo_utils.rewards import vader_reward
from dpo_utils.runtime.models import pick_device_and_dtype

__all__ = ["load_judge", "mean_with_prompt_interval", "reward_model_judge", "vader_judge", "win_rate"]


def vader_judge(prompts, completions) -> list[float]:
    """The offline judge for the sentiment data: VADER's compound score of each completion."""
    return vader_reward(list(completions))


def reward_model_judge(name: str, device: str | None = None, batch_size: int = 8):
    """A judge from a sequence-classification reward model (one score per conversation), e.g.
    ``Skywork/Skywork-Reward-V2-Qwen3-0.6B``. Returns ``judge(prompts, completions) -> scores``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    device, dtype = pick_device_and_dtype(device)  # bf16 only where native: a T4 gets fp16
    tokenizer = AutoTokenizer.from_pretrained(name)
    model = AutoModelForSequenceClassification.from_pretrained(name, dtype=dtype, num_labels=1).to(device).eval()

    @torch.no_grad()
    def judge(prompts, completions) -> list[float]:
        texts = [
            tokenizer.apply_chat_template(list(p) + [{"role": "assistant", "content": c}], tokenize=False)
            for p, c in zip(prompts, completions)
        ]
        scores = []
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(device)
            scores += model(**batch).logits[:, 0].float().tolist()
        return scores

    return judge


def load_judge(name: str):
    """``"vader"`` for the offline judge, otherwise a reward model id for :func:`reward_model_judge`."""
    return vader_judge if name == "vader" else reward_model_judge(name)


def win_rate(
    policy_scores, reference_scores, prompts=None, level: float = 0.95, n_bootstrap: int = 4000, seed: int = 0
) -> dict:
    """Share of comparisons where the policy's completion scores higher (ties count one half).

    Several samples of one prompt are not independent comparisons: a prompt that suits the
    policy tends to win all of them. So the interval is a **bootstrap over prompts**: resample
    the prompts with replacement (``n_bootstrap`` times), keep each drawn prompt's comparisons,
    recompute the rate, and take the central ``level`` share. ``prompts`` gives each comparison's
    prompt (index or text); without it every comparison is its own prompt.

    Returns ``wins``, ``ties``, ``losses``, ``n`` (comparisons), ``n_prompts``, ``rate``, ``low``, ``high``.
    """
    if len(policy_scores) != len(reference_scores) or not policy_scores:
        raise ValueError(f"need matched, non-empty scores: got {len(policy_scores)} and {len(reference_scores)}")
    prompts = list(range(len(policy_scores))) if prompts is None else list(prompts)
    if len(prompts) != len(policy_scores):
        raise ValueError(f"need one prompt per comparison: got {len(prompts)} for {len(policy_scores)}")
    outcomes = [1.0 if p > r else 0.5 if p == r else 0.0 for p, r in zip(policy_scores, reference_scores)]
    interval = mean_with_prompt_interval(outcomes, prompts, level, n_bootstrap, seed)
    return {
        "wins": outcomes.count(1.0),
        "ties": outcomes.count(0.5),
        "losses": outcomes.count(0.0),
        "n": len(outcomes),
        "n_prompts": interval["n_prompts"],
        "rate": statistics.fmean(outcomes),
        "low": interval["low"],
        "high": interval["high"],
    }
