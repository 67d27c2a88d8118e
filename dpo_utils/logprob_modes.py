"""How a batch of preference pairs goes through the model: the log-prob modes, and ``"auto"``, which picks one.

Every mode gives the same log-probs and gradients, up to float rounding; they differ in speed and
memory. ``"shared"`` computes each prompt once for both completions; ``"packed"`` packs pairs into
rows without padding (block-diagonal attention), which wins when lengths vary. ``"auto"``, the
default of :class:`~dpo_utils.trainer.DPOConfig`, picks between them per batch by the padding each
would compute (:func:`resolve_logprob_mode`). docs/speed.md has the measurements behind it.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from dpo_utils.data import TokenizedPair, collate_pairs, collate_shared_prompt
from dpo_utils.logprobs import (
    checkpointing_active,
    completion_logprobs_lean,
    model_sequence_logprobs,
    shared_prompt_logprobs,
)
from dpo_utils.packing import PackedBatch, pack_pairs, packed_pair_logprobs, packed_positions

LogprobMode = Literal["auto", "full", "lean", "shared", "packed", "packed-unshared"]
LOGPROB_MODES = {  # every mode gives the same log-probs and gradients, up to float rounding
    "auto": "per batch 'shared' or 'packed', by their padding (resolve_logprob_mode); 'packed' under checkpointing",
    "full": "each sequence prompt + completion, padded, logits at every position (the textbook computation)",
    "lean": "as 'full', with the LM head on completion positions only, in chunks (no batch x seq x vocab tensor)",
    "shared": "each prompt once, its key/value cache shared by chosen and rejected (not under checkpointing)",
    "packed": "prompt + chosen + rejected of each pair packed into rows without padding, block-diagonal attention",
    "packed-unshared": "as 'packed', with prompt + chosen and prompt + rejected as separate blocks",
}
assert tuple(LOGPROB_MODES) == get_args(LogprobMode)
# "auto" computes a batch packed when packing saves at least this share of the positions the shared
# layout computes (its padding, beyond the packed rows' own at row ends). Measured with SmolLM2-135M, 4
# pairs of ~64 + 64 tokens, on a 2-core CPU (docs/speed.md): packed / shared time was 1.17 at no saving
# and 0.64 at a 37 % saving for whole steps on 2 threads, break-even near 15 % if linear in between;
# forward + backward on 1 thread, 0.96 at no saving, 0.80-0.94 at 8-19 % and 0.63-0.73 from 22 %.
# From 20 % both expect packing to win.
PACKED_MIN_SAVING = 0.2
SHARED_UNDER_CHECKPOINTING = (
    "logprob_mode='shared' keeps each prompt's key/value cache, which activation checkpointing cannot keep: "
    "use logprob_mode='auto' (packed under checkpointing) or 'packed' (the same prompt sharing, in one packed "
    "forward), or turn activation checkpointing off"
)


def check_logprob_mode(mode) -> None:
    """Refuse a ``logprob_mode`` that is not one of :data:`LOGPROB_MODES`."""
    if not isinstance(mode, str) or mode not in LOGPROB_MODES:
        raise ValueError(f"logprob_mode={mode!r}: choose one of {', '.join(map(repr, LOGPROB_MODES))}")


def mode_before_batching(mode: str, checkpointing: bool) -> str:
    """``mode`` as far as it is fixed before a batch is seen: ``"auto"`` is ``"packed"`` under activation
    checkpointing (no key/value cache can be kept there) and stays ``"auto"`` otherwise; ``"shared"`` under
    checkpointing is refused (``ValueError``). The trainer's forwards, its reference pass and any pass that
    must compute as they did all take the mode from here."""
    check_logprob_mode(mode)
    if mode == "shared" and checkpointing:
        raise ValueError(SHARED_UNDER_CHECKPOINTING)
    return "packed" if mode == "auto" and checkpointing else mode


def resolve_logprob_mode(mode: str, pairs: list[TokenizedPair], checkpointing: bool = False) -> str:
    """The mode that computes ``pairs``: ``mode`` itself, unless it is ``"auto"``.

    ``"auto"`` is ``"packed"`` under activation checkpointing (``checkpointing``: it is on and the
    model is training), where no key/value cache can be kept. Otherwise it counts the positions each
    layout would compute: the shared layout pads every prompt to the longest prompt and every
    completion to the longest completion (``B x (Lp + 2 Lc)``); the packed layout pads row ends only
    (:func:`~dpo_utils.packing.packed_positions`). Packed attention is masked over whole rows and
    can be the slower at equal positions; ``"auto"`` packs when packing saves at least
    ``PACKED_MIN_SAVING`` (20 %) of the shared layout's positions, else shares. ``"shared"`` under
    checkpointing is refused (``ValueError``), not silently changed.
    """
    mode = mode_before_batching(mode, checkpointing)
    if mode != "auto":
        return mode
    longest_prompt = max(len(p.prompt_ids) for p in pairs)
    longest_completion = max(max(len(p.chosen_ids), len(p.rejected_ids)) for p in pairs)
    shared = len(pairs) * (longest_prompt + 2 * longest_completion)
    return "packed" if packed_positions(pairs) <= (1 - PACKED_MIN_SAVING) * shared else "shared"


def _concrete(mode: str) -> str:
    check_logprob_mode(mode)
    if mode == "auto":
        raise ValueError("logprob_mode='auto' depends on the batch: resolve it first with resolve_logprob_mode")
    return mode


def collate_batch(
    pairs: list[TokenizedPair], pad_token_id: int, padding_side: str = "right", mode: str = "full"
) -> dict:
    """The tensors :func:`logprobs_of_batch` needs for ``mode``, a mode other than ``"auto"``
    (:func:`resolve_logprob_mode` gives the one ``"auto"`` picks for these pairs)."""
    mode = _concrete(mode)
    if mode.startswith("packed"):
        return vars(pack_pairs(pairs, share_prompt=mode == "packed", pad_token_id=pad_token_id))
    if mode == "shared":
        return collate_shared_prompt(pairs, pad_token_id)
    batch = collate_pairs(pairs, pad_token_id, padding_side)
    return {k: batch[k] for k in ("input_ids", "attention_mask", "completion_mask")}


def logprobs_of_batch(model, batch: dict, mode: str = "full", chunk_size: int = 256) -> torch.Tensor:
    """Summed completion log-probs of the ``2B`` sequences of a batch collated for ``mode``, chosen first."""
    mode = _concrete(mode)
    if mode.startswith("packed"):
        return packed_pair_logprobs(model, PackedBatch(**batch), chunk_size=chunk_size)
    if mode == "shared":
        return shared_prompt_logprobs(model, *batch.values(), chunk_size=chunk_size)
    if mode == "lean":
        return completion_logprobs_lean(model, *batch.values(), chunk_size=chunk_size)
    return model_sequence_logprobs(model, *batch.values())


def batch_logprobs(
    model,
    pairs: list[TokenizedPair],
    pad_token_id: int,
    padding_side: str = "right",
    mode: str = "full",
    chunk_size: int = 256,
):
    """Chosen and rejected sequence log-probs of ``pairs``, chosen and rejected in one pass.

    ``mode``: one of :data:`LOGPROB_MODES` (``"auto"`` is resolved for these pairs by
    :func:`resolve_logprob_mode`, as the trainer resolves it). All give the same values and gradients.
    Returns ``(chosen, rejected, token_counts)``; ``token_counts`` has the completion lengths
    of all ``2B`` sequences, chosen first.
    """
    device = next(model.parameters()).device
    mode = resolve_logprob_mode(mode, pairs, checkpointing_active(model))
    batch = {k: v.to(device) for k, v in collate_batch(pairs, pad_token_id, padding_side, mode).items()}
    logps = logprobs_of_batch(model, batch, mode, chunk_size)
    return logps[: len(pairs)], logps[len(pairs) :], batch["completion_mask"].sum(-1)


class PolicyLogprobs(torch.nn.Module):
    """The policy as a module whose forward maps a batch collated for ``mode`` to sequence log-probs.

    The lean, shared and packed modes call the decoder and the LM head separately, bypassing the
    model's own ``forward``; wrapping the whole computation in one module is what lets
    distributed data parallelism (which hooks ``forward``) see it. ``mode`` is given per batch,
    since ``"auto"`` resolves differently from batch to batch.
    """

    def __init__(self, model, chunk_size: int):
        super().__init__()
        self.model, self.chunk_size = model, chunk_size

    def forward(self, batch: dict, mode: str) -> torch.Tensor:
        return logprobs_of_batch(self.model, batch, mode, self.chunk_size)
