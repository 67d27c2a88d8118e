r"""Per-sequence log-probabilities of completions.

A causal LM's logits at position :math:`t` predict the token at position :math:`t+1`. For a
sequence ``input_ids`` with a ``completion_mask`` that is 1 on completion tokens (not the
prompt, not padding), the sequence log-prob is

.. math::
    \log\pi(y|x) = \sum_{t:\ m_{t+1}=1} \log \mathrm{softmax}(z_t)[\,\mathrm{id}_{t+1}\,],

and the length-normalised version divides by the number of completion tokens. Because the
sum runs over the mask only, left and right padding give the same result as long as the
model sees correct ``position_ids`` (:func:`position_ids_from_mask`).

The same values come from several layouts of a batch of pairs (``DPOConfig.logprob_mode`` picks one):
padded full sequences with logits everywhere (:func:`model_sequence_logprobs`) or only on completion
positions (:func:`completion_logprobs_lean`); each prompt computed once, its key/value cache shared by
both completions (:func:`shared_prompt_logprobs`); sequences packed into rows without padding
(:func:`pack_pairs`, :func:`packed_pair_logprobs`).
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


def decoder_of(model: torch.nn.Module) -> torch.nn.Module:
    """The transformer body of a causal LM (hidden states out, no LM head), on any transformers version.

    Before transformers 5.0, ``get_decoder()`` of GPT-2 and some other models returned the whole
    LM (or did not exist); the base model (``model.model``, ``model.transformer``...) is the body
    everywhere. A PEFT wrapper is looked through (its LoRA layers sit inside that body).
    """
    if hasattr(model, "get_base_model"):  # peft.PeftModel
        model = model.get_base_model()
    body = getattr(model, getattr(model, "base_model_prefix", ""), None)
    if isinstance(body, torch.nn.Module) and body is not model:
        return body
    return model.get_decoder()


def _chunk_token_logprobs(hidden: torch.Tensor, targets: torch.Tensor, lm_head: torch.nn.Module) -> torch.Tensor:
    return token_logprobs(lm_head(hidden), targets)


def summed_completion_logprobs(model, hidden, targets, rows, n_rows, chunk_size):
    """LM head on the selected ``hidden`` states only, in checkpointed chunks; sums per row."""
    from torch.utils.checkpoint import checkpoint

    if (torch.bincount(rows, minlength=n_rows) == 0).any():
        raise ValueError("a row has no completion tokens (truncated to nothing?)")
    lm_head = model.get_output_embeddings()
    pieces = []
    for start in range(0, len(hidden), chunk_size):
        args = (hidden[start : start + chunk_size], targets[start : start + chunk_size], lm_head)
        pieces.append(
            checkpoint(_chunk_token_logprobs, *args, use_reentrant=False)
            if torch.is_grad_enabled()
            else _chunk_token_logprobs(*args)
        )
    token_logps = torch.cat(pieces)
    return torch.zeros(n_rows, dtype=token_logps.dtype, device=token_logps.device).index_add(0, rows, token_logps)


def completion_logprobs_lean(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    chunk_size: int = 256,
) -> torch.Tensor:
    """Same result as :func:`model_sequence_logprobs` (sum), computing logits only where needed.

    The LM head runs only on positions that predict a completion token (no prompt, no padding),
    ``chunk_size`` positions at a time, each chunk checkpointed so its ``(chunk, vocab)`` float32
    logits are recomputed in the backward pass instead of kept: the full
    ``batch x seq x vocab`` tensor never exists.
    """
    hidden = decoder_of(model)(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    ).last_hidden_state
    predicts_completion = completion_mask[:, 1:].bool()
    rows = predicts_completion.nonzero()[:, 0]
    return summed_completion_logprobs(
        model,
        hidden[:, :-1][predicts_completion],
        input_ids[:, 1:][predicts_completion],
        rows,
        len(input_ids),
        chunk_size,
    )


def shared_prompt_logprobs(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    chunk_size: int = 256,
) -> torch.Tensor:
    """Completion log-probs of ``2B`` rows (chosen then rejected) sharing ``B`` prompts.

    Each prompt (left-padded, ``(B, Lp)``) runs through the model **once**; its key/value cache
    is duplicated for the chosen and the rejected completion (right-padded, ``(2B, Lc)``), which
    then attend to it. Same values and gradients as two full sequences, fewer tokens computed.

    A KV cache cannot live through activation checkpointing (transformers turns the cache off,
    and a recomputed layer would write into it again): under checkpointing this raises a
    ``ValueError``; the same sharing runs as one packed forward (:mod:`dpo_utils.packing`), which
    ``logprob_mode="auto"`` picks there.
    """
    if checkpointing_active(model):
        raise ValueError(
            "shared_prompt_logprobs keeps each prompt's key/value cache, which activation checkpointing cannot "
            "keep: compute the batch packed (dpo_utils.packing.packed_pair_logprobs) or turn checkpointing off"
        )
    decoder = decoder_of(model)
    prompt = decoder(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        position_ids=position_ids_from_mask(prompt_mask),
        use_cache=True,
    )
    both = torch.arange(len(prompt_ids), device=prompt_ids.device).repeat(2)
    cache = prompt.past_key_values
    cache.batch_select_indices(both)
    positions = prompt_mask.sum(-1)[both, None] + torch.arange(completion_ids.shape[1], device=prompt_ids.device)
    hidden = decoder(
        input_ids=completion_ids,
        attention_mask=torch.cat([prompt_mask[both], completion_mask], dim=1),
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
    ).last_hidden_state
    # completion token t is predicted by the state before it: the prompt's last one for t = 0
    predicting = torch.cat([prompt.last_hidden_state[both, -1:], hidden[:, :-1]], dim=1)
    selected = completion_mask.bool()
    return summed_completion_logprobs(
        model,
        predicting[selected],
        completion_ids[selected],
        selected.nonzero()[:, 0],
        len(completion_ids),
        chunk_size,
    )


def checkpointing_enabled(model: torch.nn.Module) -> bool:
    """True when transformers' activation checkpointing is switched on (the flag transformers sets on
    checkpointed modules, read directly: its name for it changed in 5.x); it acts in training only."""
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


def checkpointing_active(model: torch.nn.Module) -> bool:
    """True when transformers' activation checkpointing is on and the model is training."""
    return model.training and checkpointing_enabled(model)
