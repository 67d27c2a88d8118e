"""When the numbers break: non-finite logits or log-probs, and samples that are one token repeated.

Each check raises :class:`NumericalFailureError` with advice that depends on where the computation
ran: under half precision, another precision (and, for a LoRA base in fp16, what fp32 would
cost on a T4, from :mod:`dpo_utils.runtime.memory`); entirely in fp32, a look at the weights and inputs,
since fp32 does not overflow on sound ones.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import torch
from transformers import LogitsProcessor

from dpo_utils.runtime.memory import GIB
from dpo_utils.runtime.precision import MIXED_PRECISION
from dpo_utils.runtime.presets import PRESETS, preset_memory


class NumericalFailureError(RuntimeError):
    """Logits or log-probs that are not finite, or samples that are one token repeated: the signs of
    half precision overflowing (fp16's largest number is 65504), or in fp32 of bad weights or inputs."""


def describe_precision(mixed_precision: str, model=None) -> str:
    """``"mixed_precision='fp16' (weights float16)"``: what a numerical error message names."""
    weights = ""
    if model is not None:
        dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
        weights = f" (weights {'/'.join(dtypes)})"
    return f"mixed_precision={mixed_precision!r}{weights}"


def precision_advice(mixed_precision: str, model=None) -> str:
    """What to try when a computation gave inf or NaN: another precision where it ran in half precision;
    where it ran entirely in fp32 (no autocast, fp32 weights), a look at the inputs and weights, since
    fp32 does not overflow on sound ones and half precision would only make it worse."""
    if mixed_precision == "no" and (model is None or all(p.dtype == torch.float32 for p in model.parameters())):
        return (
            f"This ran in fp32 ({describe_precision(mixed_precision, model)}), which does not overflow on sound "
            "inputs and weights: look for weights that are already inf or NaN (a diverged or corrupted model) "
            "or inputs out of range (token ids past the vocabulary). bf16 or fp16 would not help."
        )
    t4_fp32_base = preset_memory(replace(PRESETS["t4"], dtype="float32"))["total"] / GIB
    others = [f"'{value}'" for value in MIXED_PRECISION if value != mixed_precision]
    return (
        f"This ran under {describe_precision(mixed_precision, model)}. Try mixed_precision={' or '.join(others)} "
        "(bf16 only where the GPU has it natively: fp16 overflows past 65504). For LoRA on an fp16 base, load the "
        f"frozen base in float32 instead: the t4 preset then needs about {t4_fp32_base:.1f} GiB of a T4's 15 "
        "(dpo_utils.runtime.memory estimate)."
    )


def check_finite_logprobs(values: torch.Tensor, mixed_precision: str, what: str, model=None) -> None:
    """Raise :class:`NumericalFailureError` when ``values`` hold inf or NaN."""
    bad = (~torch.isfinite(values)).sum().item()
    if bad:
        raise NumericalFailureError(
            f"{bad} of {values.numel()} {what} are not finite. " + precision_advice(mixed_precision, model)
        )


class FiniteLogitsGuard(LogitsProcessor):
    """Stops generation with a clear error at the first NaN or +inf logit (an overflow)."""

    def __init__(self, mixed_precision: str, model=None):
        self.mixed_precision, self.model = mixed_precision, model

    def __call__(self, input_ids, scores):
        if torch.isnan(scores).any() or torch.isposinf(scores).any():
            raise NumericalFailureError(
                f"non-finite logits while sampling token {input_ids.shape[1] + 1}. "
                + precision_advice(self.mixed_precision, self.model)
            )
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
        raise NumericalFailureError(
            f"{degenerate} of {len(completions)} samples are mostly one repeated token. "
            + precision_advice(mixed_precision, model)
        )


def non_finite_weights(model) -> list[str]:
    """The names of ``model``'s parameters that hold an inf or NaN (weights a step broke)."""
    return [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
