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

from dpo_utils.intervals import (
    describe_difference,
    mean_with_prompt_interval,
    paired_difference,
    summary_over_prompts,
)
from dpo_utils.logprob_modes import mode_before_batching
from dpo_utils.lora import reference_of
from dpo_utils.losses import dpo_loss
from dpo_utils.reference import ReferenceLogprobs, compute_reference_logprobs
from dpo_utils.rewards import vader_reward
from dpo_utils.runtime.precision import resolve_mixed_precision
from dpo_utils.sampling import lengths_and_caps, sample_completions, sequence_logprobs_of


def evaluate_policy(
    policy,
    reference,
    tokenizer,
    prompts,
    reward_fn=vader_reward,
    n_samples=2,
    max_new_tokens=48,
    seed=0,
    mixed_precision=None,
    batch_size=16,
):
    """Mean reward of policy samples and the sequence-level KL estimate to ``reference``, sampling and
    both log-probs computed under ``mixed_precision`` (default: the device's). ``batch_size``: samples
    generated at once (larger is faster on CPU too; a different size draws different samples).

    The unit is the prompt (:mod:`dpo_utils.intervals`): standard errors and 95% intervals come
    from the spread over prompts, not over samples. Returns a dict with

    - ``reward``, ``reward_sem``, ``reward_low``, ``reward_high``; the same four for ``kl``;
    - ``length`` (mean completion length in tokens, EOS included) and ``capped`` (the share of
      samples that stopped at ``max_new_tokens`` without an EOS);
    - ``per_sample``: ``prompt``, ``reward``, ``log_ratio``, ``length`` and ``capped`` lists, for
      :func:`compare_evaluations`;
    - ``samples``: ``(prompt, text, reward)`` triples.
    """
    precision = resolve_mixed_precision(mixed_precision, next(policy.parameters()).device)
    samples = sample_completions(
        policy, tokenizer, prompts, n_samples, max_new_tokens, seed, batch_size, mixed_precision=precision
    )
    rewards = reward_fn([sample.text for sample in samples])
    logprobs = lambda model: sequence_logprobs_of(model, samples, tokenizer.pad_token_id, mixed_precision=precision)
    if policy is reference:  # every log-ratio is exactly 0: no need for two passes that cost as much as sampling
        log_ratios = [0.0] * len(samples)
    else:
        log_ratios = (logprobs(policy) - logprobs(reference)).tolist()
    prompt_index = [sample.prompt_index for sample in samples]
    lengths, capped = lengths_and_caps(samples, tokenizer.eos_token_id, max_new_tokens)
    per_sample = {"prompt": prompt_index, "reward": rewards, "log_ratio": log_ratios}
    result = {"per_sample": per_sample | {"length": lengths, "capped": capped}}
    result |= summary_over_prompts("reward", rewards, prompt_index)
    result |= summary_over_prompts("kl", log_ratios, prompt_index)
    result |= {
        "length": statistics.fmean(lengths),
        "capped": statistics.fmean(capped),
        "samples": [(prompts[s.prompt_index], s.text, r) for s, r in zip(samples, rewards)],
    }
    return result


def compare_evaluations(result_a: dict, result_b: dict, metric: str = "reward", **bootstrap) -> dict:
    """``metric`` (``reward``, ``log_ratio`` for KL, or ``length``) of model A minus model B, both
    from :func:`evaluate_policy` on the same prompts, with a paired bootstrap over prompts
    (:func:`~dpo_utils.intervals.paired_difference`; ``separated`` says whether it excludes 0)."""
    a, b = result_a["per_sample"], result_b["per_sample"]
    return paired_difference(a[metric], a["prompt"], b[metric], b["prompt"], **bootstrap)


METRIC_NAMES = {"reward": "reward", "log_ratio": "KL", "length": "tokens"}


def describe_comparisons(results: dict, comparisons) -> str:
    """One line per ``(a, b, metric)``: ``results[a]`` minus ``results[b]`` in ``metric`` by a paired
    bootstrap over prompts (:func:`compare_evaluations`), with the verdict its interval allows."""
    labels = [f"{a} - {b}, {METRIC_NAMES[metric]}:" for a, b, metric in comparisons]
    width = max(map(len, labels), default=0)
    return "\n".join(
        f"{label:{width}s} {describe_difference(compare_evaluations(results[a], results[b], metric))}"
        for label, (a, b, metric) in zip(labels, comparisons)
    )


def evaluation_table(results: dict) -> str:
    """Text table of :func:`evaluate_policy` results ``{name: result}``: reward and KL with their 95%
    intervals over prompts, mean completion length in tokens and the share cut at the token cap."""
    width = max(16, *map(len, results))
    lines = [
        f"{'model':{width}s} {'reward [95% interval]':>25s} {'KL, nats [95% interval]':>26s} "
        f"{'tokens':>7s} {'capped':>7s}"
    ]
    for name, r in results.items():
        reward = f"{r['reward']:+.3f} [{r['reward_low']:+.3f}, {r['reward_high']:+.3f}]"
        exact = r["kl_low"] == r["kl_high"]  # the same on every prompt: a closed form, not an estimate
        kl = f"{r['kl']:.2f} (closed form)" if exact else f"{r['kl']:.2f} [{r['kl_low']:.2f}, {r['kl_high']:.2f}]"
        lines.append(f"{name:{width}s} {reward:>25s} {kl:>26s} {r['length']:7.1f} {r['capped']:7.0%}")
    return "\n".join(lines)


def describe_seed_spread(results: dict, names, label: str) -> str:
    """One line on runs that differ only in their training seed (``names``, keys of ``results``):
    the lowest and highest reward and KL, and the spread (highest minus lowest) of each."""
    parts = []
    for key, shown in (("reward", "reward"), ("kl", "KL")):
        values = [results[name][key] for name in names]
        parts.append(f"{shown} {min(values):+.3f} to {max(values):+.3f} (spread {max(values) - min(values):.3f})")
    return f"{label}, {len(names)} seeds: " + "; ".join(parts)


@torch.no_grad()
def heldout_logratios(policy, pairs, pad_token_id, reference=None, batch_size: int = 8, mixed_precision=None):
    """``(n_pairs, 2)`` log-ratios (policy minus reference) of chosen and rejected on held-out ``pairs``
    (:func:`pair_logratios`). The reference is ``reference`` when given, else ``policy`` with its LoRA
    adapters disabled; both are computed under ``mixed_precision`` (default: the device's)."""
    precision = resolve_mixed_precision(mixed_precision, next(policy.parameters()).device)
    with reference_of(policy, reference) as ref:
        ref_logps = compute_reference_logprobs(ref, pairs, pad_token_id, batch_size, mixed_precision=precision)
    return pair_logratios(policy, pairs, ref_logps, pad_token_id, batch_size, mixed_precision=precision)


def heldout_preference_metrics(
    policy, pairs, pad_token_id, beta: float, reference=None, batch_size: int = 8, mixed_precision=None
) -> dict:
    """DPO loss, implicit-reward accuracy and mean margin on held-out tokenized ``pairs`` (the reference as in
    :func:`heldout_logratios`)."""
    ratios = heldout_logratios(policy, pairs, pad_token_id, reference, batch_size, mixed_precision)
    zeros = torch.zeros(len(pairs))  # the DPO loss of log-ratios: log-probs measured from the reference's
    out = dpo_loss(ratios[:, 0], ratios[:, 1], zeros, zeros, beta=beta)
    return {
        "loss": out.losses.mean().item(),
        "accuracy": (out.margins > 0).float().mean().item(),
        "margin": out.margins.mean().item(),
        "n": len(pairs),
    }


@torch.no_grad()
def pair_logratios(
    model, pairs, reference_logps: torch.Tensor, pad_token_id: int, batch_size: int = 8, **logprob_options
) -> torch.Tensor:
    """``(n_pairs, 2)`` log-ratios :math:`\\log\\pi(y|x) - \\log\\pi_{ref}(y|x)` of chosen and rejected.

    ``reference_logps`` holds the reference's ``(chosen, rejected)`` log-probs of the same ``pairs``
    (a tensor, or a :class:`~dpo_utils.reference.ReferenceLogprobs`, whose precision is then used). The policy's are
    computed by
    :func:`~dpo_utils.reference.compute_reference_logprobs` with ``logprob_options`` (``padding_side``,
    ``mode``, ``chunk_size``, ``mixed_precision``): with the options the reference log-probs were
    computed with, an untrained copy of the reference gives exactly 0.
    """
    if isinstance(
        reference_logps, ReferenceLogprobs
    ):  # the policy's in the precision the reference's were computed in
        logprob_options.setdefault("mixed_precision", reference_logps.mixed_precision)
        reference_logps = reference_logps.values
    if len(pairs) != len(reference_logps):
        raise ValueError(f"{len(pairs)} pairs but {len(reference_logps)} rows of reference log-probs")
    policy_logps = compute_reference_logprobs(model, pairs, pad_token_id, batch_size, **logprob_options)
    return policy_logps - reference_logps.float().cpu()


def logratios_during_training(trainer, pair_indices, at_steps, batch_size: int = 8) -> list[dict]:
    """Train ``trainer`` (a :class:`~dpo_utils.trainer.DPOTrainer`) step by step and measure, at
    each step in ``at_steps`` (0: before any update), the log-ratios of the same pairs
    ``pair_indices``.

    The trainer's own metrics describe a different batch at every step; these rows follow one
    fixed set of pairs, so a rise or a fall is the policy's, not the batch's. Training is
    ``trainer.train(until=step)`` for each step in turn: the same run ``trainer.train()`` makes,
    checkpointed at each measured step when the trainer has an ``output_dir``;
    ``trainer.history`` holds the per-step metrics as usual. Returns one row per measured step,
    ``{"step", "chosen", "rejected"}``, the last two with one log-ratio per pair.
    """
    steps = sorted(set(at_steps))
    if not steps or steps[0] < trainer.step:
        raise ValueError(
            f"at_steps={list(at_steps)}: need at least one step, none before the trainer's step {trainer.step}"
        )
    cfg, indices = trainer.config, list(pair_indices)
    trainer.ensure_reference_logps()
    fixed, reference = [trainer.pairs[i] for i in indices], trainer.reference_logps.values[indices]
    options = dict(
        padding_side=cfg.padding_side,
        mode=mode_before_batching(cfg.logprob_mode, cfg.activation_checkpointing),
        chunk_size=cfg.logits_chunk_size,
        mixed_precision=trainer.mixed_precision,
    )  # as the trainer computed the reference's
    rows = []
    for target in steps:
        trainer.train(until=target)
        ratios = pair_logratios(trainer.model, fixed, reference, trainer.pad_id, batch_size, **options)
        rows.append({"step": trainer.step, "chosen": ratios[:, 0], "rejected": ratios[:, 1]})
    return rows


def heldout_pair_margins(policy, pairs, pad_token_id, beta: float, reference=None, batch_size: int = 8):
    """Implicit-reward margin :math:`\\beta(h_w - h_l)` of each held-out pair (the per-pair values behind
    :func:`heldout_preference_metrics`' accuracy and mean margin; the same reference rule)."""
    ratios = heldout_logratios(policy, pairs, pad_token_id, reference, batch_size)
    return beta * (ratios[:, 0] - ratios[:, 1])


def heldout_accuracy_by_prompt(
    policy,
    pairs,
    pad_token_id,
    beta: float,
    reference=None,
    level: float = 0.95,
    n_bootstrap: int = 4000,
    seed: int = 0,
) -> dict:
    """Held-out implicit-reward accuracy with a bootstrap interval **over prompts**.

    Pairs that share a prompt are not independent (a prompt the policy learned tends to rank all
    its pairs right), so the interval resamples prompts, as :func:`~dpo_utils.judging.win_rate`
    does. Returns ``mean`` (the accuracy), ``low``, ``high``, ``n`` (pairs) and ``n_prompts``.
    """
    margins = heldout_pair_margins(policy, pairs, pad_token_id, beta, reference)
    return mean_with_prompt_interval(
        (margins > 0).float().tolist(), [tuple(p.prompt_ids) for p in pairs], level, n_bootstrap, seed
    )
