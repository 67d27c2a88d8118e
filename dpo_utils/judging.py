"""Judge completions without a paid API: an open reward model from the hub, or VADER offline;
and the win rate of a tuned model against its reference, with a confidence interval."""

from __future__ import annotations

import math
import statistics

import torch

from dpo_utils.evaluation import vader_reward


def vader_judge(prompts, completions) -> list[float]:
    """The offline judge for the sentiment data: VADER's compound score of each completion."""
    return vader_reward(list(completions))


def reward_model_judge(name: str, device: str | None = None, batch_size: int = 8):
    """A judge from a sequence-classification reward model (one score per conversation), e.g.
    ``Skywork/Skywork-Reward-V2-Qwen3-0.6B``. Returns ``judge(prompts, completions) -> scores``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from dpo_utils.models import pick_device_and_dtype

    device, dtype = pick_device_and_dtype(device)  # bf16 only where native: a T4 gets fp16
    tokenizer = AutoTokenizer.from_pretrained(name)
    model = AutoModelForSequenceClassification.from_pretrained(name, dtype=dtype, num_labels=1).to(device).eval()

    @torch.no_grad()
    def judge(prompts, completions) -> list[float]:
        texts = [tokenizer.apply_chat_template(list(p) + [{"role": "assistant", "content": c}], tokenize=False)
                 for p, c in zip(prompts, completions)]
        scores = []
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            scores += model(**batch).logits[:, 0].float().tolist()
        return scores

    return judge


def load_judge(name: str):
    """``"vader"`` for the offline judge, otherwise a reward model id for :func:`reward_model_judge`."""
    return vader_judge if name == "vader" else reward_model_judge(name)


def win_rate(policy_scores, reference_scores, z: float = 1.96) -> dict:
    """Share of prompts where the policy's completion scores higher (ties count one half).

    Returns ``wins``, ``ties``, ``losses``, ``n``, ``rate`` and a normal-approximation confidence
    interval ``low``/``high`` (95% for ``z = 1.96``) over the per-prompt outcomes 1, 1/2, 0.
    """
    if len(policy_scores) != len(reference_scores) or not policy_scores:
        raise ValueError(f"need matched, non-empty scores: got {len(policy_scores)} and {len(reference_scores)}")
    outcomes = [1.0 if p > r else 0.5 if p == r else 0.0 for p, r in zip(policy_scores, reference_scores)]
    n, rate = len(outcomes), statistics.fmean(outcomes)
    half_width = z * statistics.pstdev(outcomes) / math.sqrt(n) if n > 1 else float("nan")
    return {"wins": outcomes.count(1.0), "ties": outcomes.count(0.5), "losses": outcomes.count(0.0), "n": n,
            "rate": rate, "low": max(0.0, rate - half_width), "high": min(1.0, rate + half_width)}
