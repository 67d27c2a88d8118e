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

import torch
from dpo_utils.progress import progress_bar

from dpo_utils.data import collate_sequences, render_prompt
from dpo_utils.logprobs import completion_logprobs_lean


@torch.no_grad()
def sample_completions(model, tokenizer, prompts, n_samples=1, max_new_tokens=48, seed=0, batch_size=16):
    """Sample ``n_samples`` completions per prompt from ``model`` at temperature 1 (fixed ``seed``).

    Returns a list of tuples ``(prompt_index, prompt_ids, completion_ids, text)``.
    """
    model.eval()
    tokenizer.padding_side = "left"
    jobs = [(i, render_prompt(tokenizer, p)) for i, p in enumerate(prompts) for _ in range(n_samples)]
    torch.manual_seed(seed)
    results = []
    for start in progress_bar(range(0, len(jobs), batch_size), desc="sampling", leave=False):
        chunk = jobs[start:start + batch_size]
        enc = tokenizer([text for _, text in chunk], return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        out = model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                             max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
        for row, (index, _) in enumerate(chunk):
            prompt_ids = enc["input_ids"][row][enc["attention_mask"][row].bool()].tolist()
            completion = out[row, enc["input_ids"].shape[1]:].tolist()
            completion = _cut_after_eos(completion, tokenizer.eos_token_id, tokenizer.pad_token_id)
            text = tokenizer.decode(completion, skip_special_tokens=True)
            results.append((index, prompt_ids, completion, text))
    return results


def _cut_after_eos(ids: list[int], eos_id: int, pad_id: int) -> list[int]:
    """Keep tokens up to and including the first EOS; drop trailing padding."""
    if eos_id in ids:
        return ids[: ids.index(eos_id) + 1]
    while ids and ids[-1] == pad_id:
        ids = ids[:-1]
    return ids


@torch.no_grad()
def sequence_logprobs_of(model, samples, pad_token_id, batch_size=16) -> torch.Tensor:
    """Log-probs of sampled completions under ``model`` (samples from :func:`sample_completions`)."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(samples), batch_size):
        batch = collate_sequences([(p, c) for _, p, c, _ in samples[start:start + batch_size]], pad_token_id)
        out.append(completion_logprobs_lean(model, *(batch[k].to(device) for k in batch)).float().cpu())
    return torch.cat(out)


def vader_reward(texts: list[str]) -> list[float]:
    """VADER's compound sentiment score in [-1, 1] for each text (offline, rule-based)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return [analyzer.polarity_scores(text)["compound"] for text in texts]


def evaluate_policy(policy, reference, tokenizer, prompts, reward_fn=vader_reward, n_samples=2, max_new_tokens=48, seed=0):
    """Mean reward of policy samples and the sequence-level KL estimate to ``reference``.

    Returns a dict with ``reward``, ``reward_sem`` (standard error), ``kl``, ``kl_sem`` and ``samples``.
    """
    samples = sample_completions(policy, tokenizer, prompts, n_samples, max_new_tokens, seed)
    rewards = reward_fn([text for *_, text in samples])
    log_ratio = sequence_logprobs_of(policy, samples, tokenizer.pad_token_id) - sequence_logprobs_of(reference, samples, tokenizer.pad_token_id)
    sem = lambda values: statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
    return {"reward": statistics.fmean(rewards), "reward_sem": sem(rewards),
            "kl": log_ratio.mean().item(), "kl_sem": sem(log_ratio.tolist()),
            "samples": [(prompts[i], text, r) for (i, _, _, text), r in zip(samples, rewards)]}


@torch.no_grad()
def heldout_preference_metrics(policy, pairs, pad_token_id, beta: float, reference=None, batch_size: int = 8) -> dict:
    """DPO loss, implicit-reward accuracy and mean margin on held-out tokenized ``pairs``.

    The reference is ``reference`` when given, else ``policy`` with its LoRA adapters disabled.
    """
    from dpo_utils.lora import reference_of
    from dpo_utils.losses import dpo_loss
    from dpo_utils.trainer import compute_reference_logprobs

    policy_logps = compute_reference_logprobs(policy, pairs, pad_token_id, batch_size)
    with reference_of(policy, reference) as ref:
        ref_logps = compute_reference_logprobs(ref, pairs, pad_token_id, batch_size)
    out = dpo_loss(policy_logps[:, 0], policy_logps[:, 1], ref_logps[:, 0], ref_logps[:, 1], beta=beta)
    return {"loss": out.losses.mean().item(), "accuracy": (out.margins > 0).float().mean().item(),
            "margin": out.margins.mean().item(), "n": len(pairs)}
