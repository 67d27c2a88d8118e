"""Sampling from a policy: completions at temperature 1, their log-probs, and where they stopped.

Samples come from the model itself (temperature 1, no top-k or top-p truncation), so averages over
them estimate expectations under the policy, as the KL estimate of :mod:`dpo_utils.evaluation`
needs. Generation is guarded by :mod:`dpo_utils.numerics`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from transformers import DynamicCache

from dpo_utils.data import collate_sequences, render_prompt
from dpo_utils.logprobs import completion_logprobs_lean
from dpo_utils.numerics import FiniteLogitsGuard, check_finite_logprobs, check_not_degenerate
from dpo_utils.runtime.precision import autocast, resolve_mixed_precision
from dpo_utils.runtime.progress import progress_bar


class Sample(NamedTuple):
    """One sampled completion of prompt number ``prompt_index``."""

    prompt_index: int
    prompt_ids: list[int]  # the rendered prompt's tokens, padding removed
    completion_ids: list[int]  # up to and including the first EOS, or cut at the token cap
    text: str  # the completion decoded, special tokens skipped


@torch.no_grad()
def sample_completions(
    model, tokenizer, prompts, n_samples=1, max_new_tokens=48, seed=0, batch_size=16, mixed_precision=None
):
    """Sample ``n_samples`` completions per prompt from ``model`` at temperature 1 (fixed ``seed``).

    Generation runs under ``mixed_precision`` (default: the device's, see
    :func:`~dpo_utils.runtime.precision.default_mixed_precision`) and is guarded: non-finite logits, or
    half-precision samples that are mostly one repeated token, raise
    :class:`~dpo_utils.runtime.precision.NumericalFailureError`.
    Returns one :class:`Sample` per completion, prompt by prompt. The caller's tokenizer is left as
    it was (prompts are padded on the left for this call only).
    """
    model.eval()
    precision = resolve_mixed_precision(mixed_precision, model.device)
    guard = FiniteLogitsGuard(precision, model)
    jobs = [(i, render_prompt(tokenizer, p)) for i, p in enumerate(prompts) for _ in range(n_samples)]
    torch.manual_seed(seed)
    results = []
    for start in progress_bar(range(0, len(jobs), batch_size), desc="sampling", leave=False):
        chunk = jobs[start : start + batch_size]
        texts = [text for _, text in chunk]
        enc = tokenizer(
            texts,
            return_tensors="pt",
            padding=True,
            padding_side="left",
            add_special_tokens=False,
            return_token_type_ids=False,
        ).to(model.device)  # token type ids: older transformers' generate refuses them for causal LMs
        with autocast(model.device, precision):
            completions = sample_rows(model, enc["input_ids"], enc["attention_mask"], max_new_tokens, tokenizer, guard)
        for row, ((index, _), completion) in enumerate(zip(chunk, completions)):
            prompt_ids = enc["input_ids"][row][enc["attention_mask"][row].bool()].tolist()
            text = tokenizer.decode(completion, skip_special_tokens=True)
            results.append(Sample(index, prompt_ids, completion, text))
    check_not_degenerate([sample.completion_ids for sample in results], precision, model)
    return results


def sample_rows(model, input_ids, attention_mask, max_new_tokens: int, tokenizer, guard=None) -> list[list[int]]:
    """Sample a completion for each left-padded prompt row at temperature 1, with a KV cache.

    The samples of ``model.generate(do_sample=True, top_k=0, top_p=1.0)``, made faster three ways
    (``benchmarks/sampling.py``, docs/speed.md): identical prompt rows (several samples of one prompt)
    go through the model once and share their cache; each token is drawn by :func:`draw_tokens`; and a
    row leaves the batch at its EOS, so the rows still writing do not pay for those that are done.
    Each completion ends with its EOS or stops at ``max_new_tokens``.
    """
    rows = list(range(len(input_ids)))  # the prompt row of each row still running
    completions: list[list[int]] = [[] for _ in rows]
    cache, mask = DynamicCache(), attention_mask
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # left padding: count real tokens
    logits = prefill(model, input_ids, attention_mask, positions, cache)
    for step in range(max_new_tokens):
        if guard is not None:
            logits = guard(mask, logits)
        tokens = draw_tokens(logits)
        for row, token in zip(rows, tokens[:, 0].tolist()):
            completions[row].append(token)
        running = tokens[:, 0] != tokenizer.eos_token_id
        if not running.any() or step == max_new_tokens - 1:
            break
        positions = positions[:, -1:] + 1
        if not running.all():  # finished rows leave the batch, and the cache
            keep = running.nonzero()[:, 0]
            cache.batch_select_indices(keep)
            rows = [rows[i] for i in keep.tolist()]
            mask, tokens, positions = mask[keep], tokens[keep], positions[keep]
        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
        logits = next_logits(model, tokens, mask, positions, cache)
    return completions


def prefill(model, input_ids, attention_mask, positions, cache) -> torch.Tensor:
    """The prompts' forward pass into ``cache``, once for each distinct row; the cache and the last
    position's logits are then copied to every row with that prompt. Returns fp32 logits, one row each."""
    distinct, inverse = torch.unique(torch.cat([input_ids, attention_mask], dim=1), dim=0, return_inverse=True)
    first = torch.empty(len(distinct), dtype=torch.long, device=inverse.device)  # a row of each distinct prompt
    first.scatter_(0, inverse, torch.arange(len(inverse), device=inverse.device))  # (any: they are equal)
    logits = next_logits(model, input_ids[first], attention_mask[first], positions[first], cache)
    cache.batch_select_indices(inverse)
    return logits[inverse]


def next_logits(model, input_ids, attention_mask, positions, cache) -> torch.Tensor:
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    return out.logits[:, -1].float()


def draw_tokens(logits: torch.Tensor) -> torch.Tensor:
    """One token per row from softmax(``logits``), by inverse transform: one uniform number per row,
    placed on the row's cumulative distribution (in float64). Exact, like ``torch.multinomial``, which
    draws an exponential number for every entry of the vocabulary instead: 49,152 a row for SmolLM2,
    and 16 % of a sampling step's time. Returns a (rows, 1) tensor of token ids."""
    cdf = torch.softmax(logits, dim=-1).double().cumsum(-1)
    uniform = torch.rand(len(cdf), 1, dtype=torch.float64, device=cdf.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, uniform, right=True).clamp(max=cdf.shape[-1] - 1)


@torch.no_grad()
def sequence_logprobs_of(model, samples, pad_token_id, batch_size=16, mixed_precision=None) -> torch.Tensor:
    """Log-probs of sampled completions under ``model`` (samples from :func:`sample_completions`),
    computed under ``mixed_precision`` (default: the device's); non-finite values raise."""
    model.eval()
    device = next(model.parameters()).device
    precision = resolve_mixed_precision(mixed_precision, device)
    out = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        batch = collate_sequences([(s.prompt_ids, s.completion_ids) for s in chunk], pad_token_id)
        with autocast(device, precision):
            out.append(completion_logprobs_lean(model, *(batch[k].to(device) for k in batch)).float().cpu())
    logps = torch.cat(out)
    check_finite_logprobs(logps, precision, "log-probs of sampled completions", model)
    return logps


def lengths_and_caps(samples, eos_token_id: int, max_new_tokens: int) -> tuple[list[int], list[bool]]:
    """Each sample's completion length in tokens and whether it stopped at the cap (:func:`hit_the_cap`);
    ``samples`` from :func:`sample_completions`."""
    completions = [sample.completion_ids for sample in samples]
    return [len(c) for c in completions], [hit_the_cap(c, eos_token_id, max_new_tokens) for c in completions]


def hit_the_cap(completion: list[int], eos_token_id: int, max_new_tokens: int) -> bool:
    """True when a sampled completion stopped at the token cap rather than at its own EOS."""
    return len(completion) >= max_new_tokens and eos_token_id not in completion


def ended(sample: Sample, eos_token_id: int) -> bool:
    """True when a sample stopped at end-of-sequence rather than at the token cap."""
    return bool(sample.completion_ids) and sample.completion_ids[-1] == eos_token_id
