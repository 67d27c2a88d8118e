r"""Per-sequence log-probabilities of completions.

A causal LM's logits at position :math:`t` predict the token at position :math:`t+1`. For a
sequence ``input_ids`` with a ``completion_mask`` that is 1 on completion tokens (not the
prompt, not padding), the sequence log-prob is

.. math::
    \log\pi(y|x) = \sum_{t:\ m_{t+1}=1} \log \mathrm{softmax}(z_t)[\,\mathrm{id}_{t+1}\,],

and the length-normalised version divides by the number of completion tokens. Because the
sum runs over the mask only, left and right padding give the same result as long as the
model sees correct ``position_ids`` (:func:`position_ids_from_mask`).
"""

from __future__ import annotations

import torch


def sequence_logprobs(
    logits: torch.Tensor,
    labels: torch.Tensor,
    completion_mask: torch.Tensor,
    average: bool = False,
) -> torch.Tensor:
    """Sum (or mean) of completion-token log-probs for each sequence.

    Args:
        logits: ``(batch, seq, vocab)`` model outputs, position ``t`` predicting ``t+1``.
        labels: ``(batch, seq)`` token ids aligned with the *inputs* (not pre-shifted).
        completion_mask: ``(batch, seq)``, 1 where a label token belongs to the completion.
        average: divide by the number of completion tokens (length-normalised log-prob).

    Returns:
        ``(batch,)`` float32 tensor.

    Raises:
        ValueError: if shapes disagree, or a row has no completion token (its mean would be NaN).
    """
    if logits.shape[:2] != labels.shape or labels.shape != completion_mask.shape:
        raise ValueError(
            f"shapes disagree: logits {tuple(logits.shape)}, labels {tuple(labels.shape)}, "
            f"completion_mask {tuple(completion_mask.shape)}"
        )
    mask = completion_mask[:, 1:].to(torch.float32)
    counts = mask.sum(-1)
    if (counts == 0).any():
        rows = (counts == 0).nonzero().flatten().tolist()
        raise ValueError(f"rows {rows} have no completion tokens (truncated to nothing?)")
    token_logps = token_logprobs(logits[:, :-1], labels[:, 1:])
    total = (token_logps * mask).sum(-1)
    return total / counts if average else total


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)[target]`` per position, in float32, shape ``targets.shape``."""
    logits = logits.float()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions 0, 1, 2, ... counted over real tokens only, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def model_sequence_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    average: bool = False,
) -> torch.Tensor:
    """Run ``model`` and return :func:`sequence_logprobs` for each row, padding-side agnostic."""
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
    ).logits
    return sequence_logprobs(logits, input_ids, completion_mask, average=average)


def _chunk_token_logprobs(hidden: torch.Tensor, targets: torch.Tensor, lm_head: torch.nn.Module) -> torch.Tensor:
    return token_logprobs(lm_head(hidden), targets)


def completion_logprobs_lean(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Same result as :func:`model_sequence_logprobs` (sum), computing logits only where needed.

    The LM head runs only on positions that predict a completion token (no prompt, no padding),
    ``chunk_size`` positions at a time, each chunk checkpointed so its ``(chunk, vocab)`` float32
    logits are recomputed in the backward pass instead of kept: the full
    ``batch x seq x vocab`` tensor never exists.
    """
    from torch.utils.checkpoint import checkpoint

    hidden = model.get_decoder()(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask)
    ).last_hidden_state
    predicts_completion = completion_mask[:, 1:].bool()
    rows = predicts_completion.nonzero()[:, 0]
    if (torch.bincount(rows, minlength=len(input_ids)) == 0).any():
        raise ValueError("a row has no completion tokens (truncated to nothing?)")
    selected = hidden[:, :-1][predicts_completion]
    targets = input_ids[:, 1:][predicts_completion]
    lm_head = model.get_output_embeddings()
    pieces = []
    for start in range(0, len(selected), chunk_size):
        args = (selected[start:start + chunk_size], targets[start:start + chunk_size], lm_head)
        pieces.append(checkpoint(_chunk_token_logprobs, *args, use_reentrant=False) if torch.is_grad_enabled() else _chunk_token_logprobs(*args))
    token_logps = torch.cat(pieces)
    return torch.zeros(len(input_ids), dtype=token_logps.dtype, device=token_logps.device).index_add(0, rows, token_logps)
