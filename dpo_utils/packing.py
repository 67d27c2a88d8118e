"""Padding-free batches: preference pairs packed into rows, with block-diagonal attention.

Each pair becomes one unit (prompt, chosen, rejected; or prompt + chosen and prompt + rejected as
two blocks with ``share_prompt=False``), and units are placed into rows without padding between
them. A 4-D attention mask lets each token see only its own unit's earlier tokens (the rejected
completion does not see the chosen one), and position ids restart in every unit, so the log-probs
and gradients are those of the padded layouts, with less padding computed when lengths vary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dpo_utils.logprobs import decoder_of, summed_completion_logprobs

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
    return summed_completion_logprobs(
        model, states, packed.targets, packed.sequence, len(packed.completion_mask), chunk_size
    )
