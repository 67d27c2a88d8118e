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

from dataclasses import dataclass

import torch

from dpo_utils.data import TokenizedPair


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


def _summed_completion_logprobs(model, hidden, targets, rows, n_rows, chunk_size):
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
    return _summed_completion_logprobs(
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
    and a recomputed layer would write into it again): when checkpointing is on, the same
    sharing runs as one packed forward instead (:func:`packed_pair_logprobs`). (The trainer does not
    rely on this: it refuses ``logprob_mode="shared"`` with checkpointing, and its ``"auto"`` mode
    computes such batches packed.)
    """
    decoder = decoder_of(model)
    if checkpointing_active(model):
        return packed_pair_logprobs(
            model,
            pack_pairs(
                _pairs_from_shared_batch(prompt_ids, prompt_mask, completion_ids, completion_mask), share_prompt=True
            ),
            chunk_size=chunk_size,
        )
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
    return _summed_completion_logprobs(
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


def _pairs_from_shared_batch(prompt_ids, prompt_mask, completion_ids, completion_mask):
    ids = lambda row, mask: row[mask.bool()].tolist()
    n = len(prompt_ids)
    return [
        TokenizedPair(
            ids(prompt_ids[i], prompt_mask[i]),
            ids(completion_ids[i], completion_mask[i]),
            ids(completion_ids[n + i], completion_mask[n + i]),
        )
        for i in range(n)
    ]


# --- padding-free (packed) batches -------------------------------------------------------------

PROMPT, FIRST, SECOND = 0, 1, 2  # branches of a packed unit: the second completion does not see the first


@dataclass
class PackedBatch:
    """Pairs packed into ``(rows, length)`` without per-sequence padding (see :func:`pack_pairs`).

    ``allowed[r, i, j]``: token ``i`` of row ``r`` may attend to token ``j``; ``real`` marks
    tokens that are not row-end padding. Completion token ``k`` (flat over all sequences) is
    predicted by the hidden state at flat position ``predictor[k]`` of the ``rows x length``
    grid, has id ``targets[k]`` and belongs to sequence ``sequence[k]`` (chosen of pair ``i``:
    ``i``; rejected: ``B + i``). ``completion_mask`` is ``(2B, longest completion)``, 1 on
    completion tokens, as in the padded layouts (its row sums are the completion lengths).
    All fields are tensors, so ``vars(batch)`` is a collated batch and ``PackedBatch(**it)`` undoes it.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    allowed: torch.Tensor
    real: torch.Tensor
    predictor: torch.Tensor
    targets: torch.Tensor
    sequence: torch.Tensor
    completion_mask: torch.Tensor

    def to(self, device) -> PackedBatch:
        return PackedBatch(**{k: v.to(device) for k, v in vars(self).items()})


def _units(pairs, share_prompt: bool):
    """Token blocks that attend only within themselves: per pair ``prompt+chosen+rejected`` when
    sharing the prompt, else ``prompt+chosen`` and ``prompt+rejected``.
    Each unit: (ids, positions, branches, [(sequence, first local index, length), ...])."""
    n = len(pairs)
    units = []
    for i, pair in enumerate(pairs):
        prompt = list(pair.prompt_ids)
        if not prompt:
            raise ValueError(f"pair {i} has an empty prompt: its first completion token has no predicting state")
        lp = len(prompt)
        completions = [(i, list(pair.chosen_ids)), (n + i, list(pair.rejected_ids))]
        groups = [completions] if share_prompt else [[c] for c in completions]
        for group in groups:
            ids, positions, branches, spans = prompt[:], list(range(lp)), [PROMPT] * lp, []
            for branch, (seq, completion) in enumerate(group, start=FIRST):
                spans.append((seq, len(ids), len(completion)))
                ids += completion
                positions += range(lp, lp + len(completion))
                branches += [branch] * len(completion)
            units.append((ids, positions, branches, spans, lp))
    return units


def _place_units(sizes: list[int], row_length: int | None) -> tuple[list[list[int]], int]:
    """Units of ``sizes`` tokens placed first-fit, longest first, into rows of at most
    ``max(row_length, longest unit)`` tokens: ``(unit indices of each row, longest row)``."""
    capacity = max(row_length or 0, max(sizes))
    rows: list[list[int]] = []
    fill: list[int] = []
    for k in sorted(range(len(sizes)), key=lambda k: -sizes[k]):
        for r, used in enumerate(fill):
            if used + sizes[k] <= capacity:
                rows[r].append(k)
                fill[r] += sizes[k]
                break
        else:
            rows.append([k])
            fill.append(sizes[k])
    return rows, max(fill)


def packed_positions(pairs, share_prompt: bool = True, row_length: int | None = None) -> int:
    """Positions (``rows x length``, row-end padding included) of :func:`pack_pairs`' layout, without building it."""
    if share_prompt:
        sizes = [len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs]
    else:
        sizes = [len(p.prompt_ids) + len(c) for p in pairs for c in (p.chosen_ids, p.rejected_ids)]
    rows, length = _place_units(sizes, row_length)
    return len(rows) * length


def pack_pairs(pairs, share_prompt: bool = True, row_length: int | None = None, pad_token_id: int = 0) -> PackedBatch:
    """Pack ``pairs`` into rows of at most ``max(row_length, longest unit)`` tokens, no padding between sequences.

    Units (see ``share_prompt``) are placed first-fit, longest first; only row ends are padded.
    Inside a unit attention is causal, except that the rejected completion does not see the
    chosen one: with ``share_prompt`` both completions attend to one copy of the prompt, with
    the positions they would have after it (the rejected one's restart after the prompt).
    """
    units = _units(pairs, share_prompt)
    rows, length = _place_units([len(u[0]) for u in units], row_length)
    ids = torch.full((len(rows), length), pad_token_id, dtype=torch.long)
    positions = torch.zeros((len(rows), length), dtype=torch.long)
    unit_of = torch.full((len(rows), length), -1, dtype=torch.long)  # padding: unit -1
    branch = torch.zeros((len(rows), length), dtype=torch.long)
    predictor, targets, sequence = [], [], []
    for r, members in enumerate(rows):
        start = 0
        for k in members:
            unit_ids, unit_positions, unit_branches, spans, lp = units[k]
            end = start + len(unit_ids)
            ids[r, start:end] = torch.tensor(unit_ids)
            positions[r, start:end] = torch.tensor(unit_positions)
            branch[r, start:end] = torch.tensor(unit_branches)
            unit_of[r, start:end] = k
            for seq, first, n in spans:
                # token j of a completion is predicted by the state before it; for j = 0 the prompt's last
                before = [start + lp - 1] + [start + first + j - 1 for j in range(1, n)]
                predictor += [r * length + b for b in before]
                targets += unit_ids[first : first + n]
                sequence += [seq] * n
            start = end
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    allowed = (unit_of[:, :, None] == unit_of[:, None, :]) & causal
    allowed &= ~((branch[:, :, None] == SECOND) & (branch[:, None, :] == FIRST))
    completions = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
    longest = max(len(c) for c in completions)
    completion_mask = torch.tensor([[1] * len(c) + [0] * (longest - len(c)) for c in completions])
    return PackedBatch(
        ids,
        positions,
        allowed,
        unit_of >= 0,
        torch.tensor(predictor),
        torch.tensor(targets),
        torch.tensor(sequence),
        completion_mask,
    )


def _attention_mask_4d(model, allowed: torch.Tensor) -> torch.Tensor:
    """``(rows, 1, L, L)`` mask for transformers: boolean for SDPA, additive (0 / min) for eager attention."""
    mask = allowed[:, None]
    if getattr(model.config, "_attn_implementation", "eager") == "sdpa":
        return mask
    dtype = next(model.parameters()).dtype
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def packed_pair_logprobs(model: torch.nn.Module, packed: PackedBatch, chunk_size: int = 256) -> torch.Tensor:
    """Completion log-probs of the ``2B`` sequences (chosen then rejected) of a :class:`PackedBatch`.

    One forward over the packed rows with a block-diagonal 4D attention mask and per-sequence
    position ids; the LM head runs on completion-predicting states only (as in
    :func:`completion_logprobs_lean`). Same values and gradients as
    :func:`model_sequence_logprobs`; no cache, so it works under activation checkpointing.
    Flash-attention kernels take no 4D mask: not supported here.
    """
    attn = getattr(model.config, "_attn_implementation", "eager")
    if attn not in ("sdpa", "eager"):
        raise ValueError(
            f"packed batches need a 4D attention mask: attn_implementation {attn!r} is not supported "
            "(use sdpa or eager, or DPOConfig(logprob_mode='shared') or 'lean', which need no 4D mask)"
        )
    device = next(model.parameters()).device
    packed = packed.to(device)
    hidden = decoder_of(model)(
        input_ids=packed.input_ids,
        attention_mask=_attention_mask_4d(model, packed.allowed),
        position_ids=packed.position_ids,
        use_cache=False,
    ).last_hidden_state
    states = hidden.flatten(0, 1)[packed.predictor]
    return _summed_completion_logprobs(
        model, states, packed.targets, packed.sequence, len(packed.completion_mask), chunk_size
    )
