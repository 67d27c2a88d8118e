"""Evaluate a policy: sample completions, score them with a reward, estimate KL to the reference.

KL estimate (sequence level, in nats):

.. math::
    \\mathrm{KL}(\\pi\\,\\|\\,\\pi_{ref}) = \\mathbb{E}_{x}\\,\\mathbb{E}_{y\\sim\\pi(\\cdot|x)}
    \\big[\\log\\pi(y|x) - \\log\\pi_{ref}(y|x)\\big],

a Monte-Carlo average over completions sampled from the *policy itself* at temperature 1 with
no top-k / top-p truncation (otherwise the samples would not come from :math:`\\pi`).
"""

from __future__ import annotations

import statistics
from collections import Counter

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from dpo_utils.data import collate_sequences, render_prompt
from dpo_utils.logprobs import completion_logprobs_lean
from dpo_utils.precision import (NumericalFailureError, autocast, check_finite_logprobs, precision_advice,
                                 resolve_mixed_precision)
from dpo_utils.progress import progress_bar


@torch.no_grad()
def sample_completions(model, tokenizer, prompts, n_samples=1, max_new_tokens=48, seed=0, batch_size=16,
                       mixed_precision=None):
    """Sample ``n_samples`` completions per prompt from ``model`` at temperature 1 (fixed ``seed``).

    Generation runs under ``mixed_precision`` (default: the device's, see
    :func:`~dpo_utils.precision.default_mixed_precision`) and is guarded: non-finite logits, or
    half-precision samples that are mostly one repeated token, raise
    :class:`~dpo_utils.precision.NumericalFailureError`.
    Returns a list of tuples ``(prompt_index, prompt_ids, completion_ids, text)``.
    """
    model.eval()
    precision = resolve_mixed_precision(mixed_precision, model.device)
    guard = LogitsProcessorList([FiniteLogitsGuard(precision, model)])
    tokenizer.padding_side = "left"
    jobs = [(i, render_prompt(tokenizer, p)) for i, p in enumerate(prompts) for _ in range(n_samples)]
    torch.manual_seed(seed)
    results = []
    for start in progress_bar(range(0, len(jobs), batch_size), desc="sampling", leave=False):
        chunk = jobs[start:start + batch_size]
        enc = tokenizer([text for _, text in chunk], return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with autocast(model.device, precision):
            out = model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, logits_processor=guard,
                                 max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
        for row, (index, _) in enumerate(chunk):
            prompt_ids = enc["input_ids"][row][enc["attention_mask"][row].bool()].tolist()
            completion = out[row, enc["input_ids"].shape[1]:].tolist()
            completion = _cut_after_eos(completion, tokenizer.eos_token_id, tokenizer.pad_token_id)
            text = tokenizer.decode(completion, skip_special_tokens=True)
            results.append((index, prompt_ids, completion, text))
    check_not_degenerate([completion for _, _, completion, _ in results], precision, model)
    return results


class FiniteLogitsGuard(LogitsProcessor):
    """Stops generation with a clear error at the first NaN or +inf logit (an overflow)."""

    def __init__(self, mixed_precision: str, model=None):
        self.mixed_precision, self.model = mixed_precision, model

    def __call__(self, input_ids, scores):
        if torch.isnan(scores).any() or torch.isposinf(scores).any():
            raise NumericalFailureError(f"non-finite logits while sampling token {input_ids.shape[1] + 1}. "
                                        + precision_advice(self.mixed_precision, self.model))
        return scores


def is_degenerate(completion: list[int], min_tokens: int = 8) -> bool:
    """True when most tokens of a completion of at least ``min_tokens`` tokens are one token repeated."""
    return len(completion) >= min_tokens and Counter(completion).most_common(1)[0][1] > len(completion) / 2


def check_not_degenerate(completions: list[list[int]], mixed_precision: str, model=None) -> None:
    """Under half precision, refuse a set of samples of which most are one repeated token (fp16
    overflow makes some models answer "!!!!!!"). In fp32 such samples are the model's own doing
    (a reward can be gamed by repetition), so they are returned, not refused."""
    degenerate = sum(map(is_degenerate, completions))
    half = mixed_precision != "no" or (model is not None and any(p.dtype != torch.float32 for p in model.parameters()))
    if half and completions and degenerate > len(completions) / 2:
        raise NumericalFailureError(f"{degenerate} of {len(completions)} samples are mostly one repeated token. "
                                    + precision_advice(mixed_precision, model))


def _cut_after_eos(ids: list[int], eos_id: int, pad_id: int) -> list[int]:
    """Keep tokens up to and including the first EOS; drop trailing padding."""
    if eos_id in ids:
        return ids[: ids.index(eos_id) + 1]
    while ids and ids[-1] == pad_id:
        ids = ids[:-1]
    return ids


@torch.no_grad()
def sequence_logprobs_of(model, samples, pad_token_id, batch_size=16, mixed_precision=None) -> torch.Tensor:
    """Log-probs of sampled completions under ``model`` (samples from :func:`sample_completions`),
    computed under ``mixed_precision`` (default: the device's); non-finite values raise."""
    model.eval()
    device = next(model.parameters()).device
    precision = resolve_mixed_precision(mixed_precision, device)
    out = []
    for start in range(0, len(samples), batch_size):
        batch = collate_sequences([(p, c) for _, p, c, _ in samples[start:start + batch_size]], pad_token_id)
        with autocast(device, precision):
            out.append(completion_logprobs_lean(model, *(batch[k].to(device) for k in batch)).float().cpu())
    logps = torch.cat(out)
    check_finite_logprobs(logps, precision, "log-probs of sampled completions", model)
    return logps


def vader_reward(texts: list[str]) -> list[float]:
    """VADER's compound sentiment score in [-1, 1] for each text (offline, rule-based)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return [analyzer.polarity_scores(text)["compound"] for text in texts]


def evaluate_policy(policy, reference, tokenizer, prompts, reward_fn=vader_reward, n_samples=2, max_new_tokens=48, seed=0,
                    mixed_precision=None):
    """Mean reward of policy samples and the sequence-level KL estimate to ``reference``, sampling and
    both log-probs computed under ``mixed_precision`` (default: the device's).

    Returns a dict with ``reward``, ``reward_sem`` (standard error), ``kl``, ``kl_sem`` and ``samples``.
    """
    precision = resolve_mixed_precision(mixed_precision, next(policy.parameters()).device)
    samples = sample_completions(policy, tokenizer, prompts, n_samples, max_new_tokens, seed, mixed_precision=precision)
    rewards = reward_fn([text for *_, text in samples])
    logprobs = lambda model: sequence_logprobs_of(model, samples, tokenizer.pad_token_id, mixed_precision=precision)
    log_ratio = logprobs(policy) - logprobs(reference)
    sem = lambda values: statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
    return {"reward": statistics.fmean(rewards), "reward_sem": sem(rewards),
            "kl": log_ratio.mean().item(), "kl_sem": sem(log_ratio.tolist()),
            "samples": [(prompts[i], text, r) for (i, _, _, text), r in zip(samples, rewards)]}


@torch.no_grad()
def heldout_preference_metrics(policy, pairs, pad_token_id, beta: float, reference=None, batch_size: int = 8,
                               mixed_precision=None) -> dict:
    """DPO loss, implicit-reward accuracy and mean margin on held-out tokenized ``pairs``.

    The reference is ``reference`` when given, else ``policy`` with its LoRA adapters disabled;
    both are computed under ``mixed_precision`` (default: the device's).
    """
    from dpo_utils.lora import reference_of
    from dpo_utils.losses import dpo_loss
    from dpo_utils.trainer import compute_reference_logprobs

    precision = resolve_mixed_precision(mixed_precision, next(policy.parameters()).device)
    policy_logps = compute_reference_logprobs(policy, pairs, pad_token_id, batch_size, mixed_precision=precision)
    with reference_of(policy, reference) as ref:
        ref_logps = compute_reference_logprobs(ref, pairs, pad_token_id, batch_size, mixed_precision=precision)
    out = dpo_loss(policy_logps[:, 0], policy_logps[:, 1], ref_logps[:, 0], ref_logps[:, 1], beta=beta)
    return {"loss": out.losses.mean().item(), "accuracy": (out.margins > 0).float().mean().item(),
            "margin": out.margins.mean().item(), "n": len(pairs)}
