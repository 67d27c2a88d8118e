"""The reference's log-probs of the training pairs: computed once, before training, and when they may be reused.

DPO compares the policy with a frozen reference on the same pairs; the reference's log-probs do not
change during training, so they are computed once (:func:`reference_logprobs`) and the reference
need not stay in memory. A policy equal to the reference must start at loss log 2, so log-probs
computed elsewhere are used only where they fit the run (:func:`usable_for_run`): the same
precision, and under half precision the same batching, since rounding depends on the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dpo_utils.data import batch_indices
from dpo_utils.logprob_modes import batch_logprobs, mode_before_batching
from dpo_utils.numerics import check_finite_logprobs
from dpo_utils.runtime.precision import autocast, resolve_mixed_precision
from dpo_utils.runtime.progress import progress_bar


@torch.no_grad()
def compute_reference_logprobs(
    model,
    pairs,
    pad_token_id,
    batch_size=8,
    padding_side="right",
    mode="shared",
    chunk_size=256,
    mixed_precision=None,
    layout=None,
) -> torch.Tensor:
    """``(n_pairs, 2)`` log-probs of chosen and rejected under ``model``, without gradients.

    ``mixed_precision=None`` takes the default for the model's device
    (:func:`~dpo_utils.runtime.precision.default_mixed_precision`). ``layout`` lists the batches as pair
    indices (default: consecutive batches of ``batch_size``). For the reference log-probs of a
    training run, use :func:`reference_logprobs`, which takes every setting from the run's config.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    precision = resolve_mixed_precision(mixed_precision, device)
    layout = layout or [
        list(range(start, min(start + batch_size, len(pairs)))) for start in range(0, len(pairs), batch_size)
    ]
    logps = torch.zeros(len(pairs), 2)
    for indices in progress_bar(layout, desc="reference log-probs", leave=False):
        with autocast(device, precision):
            chosen, rejected, _ = batch_logprobs(
                model, [pairs[i] for i in indices], pad_token_id, padding_side, mode, chunk_size
            )
        logps[indices] = torch.stack([chosen, rejected], dim=-1).float().cpu()
    model.train(was_training)
    check_finite_logprobs(logps, precision, "log-probs of the preference pairs", model)
    return logps


def first_epoch_layout(n_pairs: int, config, num_processes: int = 1) -> list[list[int]]:
    """The micro-batches of the first epoch's training forwards, in order (each process's share
    of each step, split as :meth:`~dpo_utils.trainer.DPOTrainer.accumulate_gradients` splits it), then the pairs the
    first epoch does not reach. Reference log-probs computed in this layout are what a policy
    equal to the reference computes during that epoch, to the last bit: in half precision the
    rounding of a sequence's log-prob depends on the shapes of the batch it is in."""
    layout = []
    for step in range(max(n_pairs // config.batch_size, 1)):
        indices = batch_indices(step, n_pairs, config.batch_size, config.seed)
        for rank in range(num_processes):
            mine = indices[rank::num_processes]
            micro = config.micro_batch_size or len(mine)
            layout += [mine[start : start + micro] for start in range(0, len(mine), micro)]
    reached = {i for batch in layout for i in batch}
    rest = [i for i in range(n_pairs) if i not in reached]
    micro = config.micro_batch_size or config.batch_size
    return layout + [rest[start : start + micro] for start in range(0, len(rest), micro)]


@dataclass
class ReferenceLogprobs:
    """The reference's log-probs of every pair (``values[i] = (chosen, rejected)``), the compute
    precision they were computed in and how they were batched (``batching``, from
    :func:`reference_batching`; ``None`` if unknown).

    A policy equal to the reference must start at loss log 2. The trainer therefore refuses
    them when its own precision differs, since rounding noise would then be as large as the first
    steps' signal. Under half precision it also computes its own when it would batch the pairs
    differently (another seed, batch size, padding side or log-prob mode), since the rounding
    depends on the batch. In fp32 it
    reuses them: there another batching moves SmolLM2's summed log-probs by rounding only (at most
    2e-4 nats on the sentiment pairs), and the first step's loss is log 2 within 3e-5 rather than
    to the last bit. A run that must start exactly at log 2 passes ``None`` instead."""

    values: torch.Tensor
    mixed_precision: str
    batching: dict | None = None

    def __len__(self) -> int:
        return len(self.values)


def reference_batching(n_pairs: int, config, num_processes: int = 1) -> dict:
    """How a run's forwards batch the pairs: the first epoch's micro-batches
    (:func:`first_epoch_layout`), padding side, log-prob mode and LM-head chunk. In half precision
    each of them changes how a log-prob rounds."""
    return {
        "layout": first_epoch_layout(n_pairs, config, num_processes),
        "padding_side": config.padding_side,
        "mode": mode_before_batching(config.logprob_mode, config.activation_checkpointing),
        "chunk_size": config.logits_chunk_size,
    }


def reference_logprobs(reference, pairs, pad_token_id, config, num_processes: int = 1) -> ReferenceLogprobs:
    """The one place that computes a run's reference log-probs: in the run's precision (resolved for
    the reference's device) and batching (:func:`reference_batching`), so that a policy equal to the
    reference starts at loss log 2 exactly."""
    precision = resolve_mixed_precision(config.mixed_precision, next(reference.parameters()).device)
    batching = reference_batching(len(pairs), config, num_processes)
    values = compute_reference_logprobs(
        reference,
        pairs,
        pad_token_id,
        padding_side=batching["padding_side"],
        mode=batching["mode"],
        chunk_size=batching["chunk_size"],
        mixed_precision=precision,
        layout=batching["layout"],
    )
    return ReferenceLogprobs(values, precision, batching)


def checked_reference(reference_logps, n_pairs: int, mixed_precision: str):
    """``reference_logps`` if they match a run on ``n_pairs`` pairs in ``mixed_precision``; a clear error
    otherwise (``None`` passes: the trainer computes its own)."""
    if reference_logps is None:
        return None
    if not isinstance(reference_logps, ReferenceLogprobs):
        raise TypeError(
            "reference_logps must be a ReferenceLogprobs (from dpo_utils.reference.reference_logprobs(reference, "
            "pairs, pad_token_id, config)), which records the precision they were computed in; got "
            f"{type(reference_logps).__name__}."
        )
    if reference_logps.mixed_precision != mixed_precision:
        raise ValueError(
            f"reference log-probs computed with mixed_precision={reference_logps.mixed_precision!r}, but this "
            f"run computes the policy with {mixed_precision!r}: at step 1 the policy would differ from "
            "its own reference by rounding noise. Recompute them with reference_logprobs(reference, pairs, "
            "pad_token_id, config) for this config, or leave reference_logps out."
        )
    if len(reference_logps) != n_pairs:
        raise ValueError(f"{len(reference_logps)} reference log-prob rows for {n_pairs} pairs")
    return reference_logps


def usable_for_run(reference_logps, n_pairs: int, config, mixed_precision: str, num_processes: int = 1) -> bool:
    """Whether a run uses ``reference_logps``: only DPO uses a reference, and under half precision only
    log-probs computed in the run's own batching start it at loss log 2."""
    if config.objective != "dpo":
        return False
    if mixed_precision == "no":
        return True
    return reference_logps.batching == reference_batching(n_pairs, config, num_processes)
