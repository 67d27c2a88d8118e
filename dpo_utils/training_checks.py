"""What the trainer refuses before any work: settings out of range or of the wrong type, inputs that cannot
train, and trained weights that are not fp32.

Each check raises at once, naming the setting (or the input) and its value, so a run never fails
late, after the reference pass, or trains silently wrong.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import fields
from pathlib import Path

from dpo_utils.logprob_modes import SHARED_UNDER_CHECKPOINTING, check_logprob_mode
from dpo_utils.losses import LOSS_TYPES, OBJECTIVES
from dpo_utils.runtime.precision import check_mixed_precision, half_precision_trainables

# Range of each numeric setting: (test, what the error says it must be); every value must also be
# finite (+inf only where INFINITE_ALLOWED). beta, label_smoothing and micro_batch_size are checked
# in check_settings (beta's sign matters only with a reference; micro_batch_size must divide batch_size).
SETTING_RANGES = {
    "beta": (None, ""),
    "label_smoothing": (None, ""),
    "nll_weight": (lambda v: v >= 0, "at least 0 (the weight of the chosen NLL term)"),
    "simpo_gamma": (None, ""),
    "learning_rate": (lambda v: v > 0, "positive (0 trains nothing)"),
    "batch_size": (lambda v: v >= 1, "a positive integer"),
    "micro_batch_size": (None, ""),
    "max_steps": (lambda v: v >= 1, "a positive integer (the number of optimizer steps)"),
    "warmup_steps": (lambda v: v >= 0, "an integer >= 0 (0: no warmup)"),
    "max_grad_norm": (
        lambda v: v > 0,
        "positive: gradients are scaled to at most this norm, so 0 trains nothing. "
        "For no clipping use max_grad_norm=float('inf').",
    ),
    "weight_decay": (lambda v: v >= 0, "at least 0"),
    "seed": (None, ""),
    "save_every": (lambda v: v >= 1, "a positive number of steps, or None"),
    "logits_chunk_size": (lambda v: v >= 1, "a positive integer"),
    "max_consecutive_skips": (lambda v: v >= 1, "a positive integer"),
}
INFINITE_ALLOWED = ("max_grad_norm",)
TYPE_CHECKS = {  # annotation -> (test, name in the error); bool is an int in Python, not here
    "float": (lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool), "a number"),
    "int": (lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool), "an integer"),
    "bool": (lambda v: isinstance(v, bool), "True or False"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "LogprobMode": (lambda v: isinstance(v, str), "a string"),  # which string: check_logprob_mode
    "None": (lambda v: v is None, "None"),
}


def _check_setting_types(config) -> None:
    """Refuse a setting whose value has none of the types its annotation names (``int | None``: either)."""
    for item in fields(config):
        value, kinds = getattr(config, item.name), item.type.split(" | ")
        if not any(TYPE_CHECKS[kind][0](value) for kind in kinds):
            expected = " or ".join(TYPE_CHECKS[kind][1] for kind in kinds)
            raise TypeError(f"{item.name}={value!r} must be {expected}, not {type(value).__name__}")


def check_settings(config) -> None:
    """Refuse settings of a :class:`~dpo_utils.trainer.DPOConfig` that cannot train: a value of the wrong type
    (per the field's annotation; a bool is not a number here) is a ``TypeError``, a value out of range or not
    finite a ``ValueError``; both name the setting and its value."""
    _check_setting_types(config)
    for name, (allowed, rule) in SETTING_RANGES.items():
        value = getattr(config, name)
        if value is None or (isinstance(value, float) and math.isinf(value) and name in INFINITE_ALLOWED):
            continue
        if not math.isfinite(value):
            infinite = " or inf" if name in INFINITE_ALLOWED else ""
            raise ValueError(f"{name}={value!r} must be a finite number{infinite}")
        if allowed is not None and not allowed(value):
            raise ValueError(f"{name}={value!r} must be {rule}")
    if config.objective not in OBJECTIVES:
        raise ValueError(f"objective={config.objective!r}: choose one of {OBJECTIVES}")
    if config.nll_weight and config.objective != "dpo":
        raise ValueError("nll_weight adds an NLL term to DPO; use it with objective='dpo'")
    if config.mixed_precision is not None:
        check_mixed_precision(config.mixed_precision)
    if config.objective != "sft" and not config.beta > 0:
        raise ValueError(f"beta={config.beta} must be positive (the strength of the KL constraint; ORPO's lambda)")
    if config.loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={config.loss_type!r}: choose one of {LOSS_TYPES}")
    if not 0.0 <= config.label_smoothing < 0.5:
        raise ValueError(
            f"label_smoothing={config.label_smoothing} must be in [0, 0.5): it is the assumed share of "
            "flipped labels, and at 0.5 the labels carry no information"
        )
    if config.label_smoothing and config.loss_type not in ("sigmoid", "robust"):
        raise ValueError(
            f"label_smoothing is not defined for loss_type={config.loss_type!r} (only 'sigmoid' and 'robust')"
        )
    if config.micro_batch_size is not None and (
        config.micro_batch_size < 1 or config.batch_size % config.micro_batch_size
    ):
        divisors = [d for d in range(1, config.batch_size + 1) if config.batch_size % d == 0]
        raise ValueError(
            f"micro_batch_size={config.micro_batch_size} must divide batch_size={config.batch_size} "
            f"(one of {divisors}), so that every micro-batch has the same size"
        )
    if config.padding_side not in ("left", "right"):
        raise ValueError(f"padding_side={config.padding_side!r}: choose 'left' or 'right'")
    check_logprob_mode(config.logprob_mode)
    if config.logprob_mode == "shared" and config.activation_checkpointing:
        raise ValueError(SHARED_UNDER_CHECKPOINTING)


def check_trainable_dtypes(model, after_init: bool = False) -> None:
    """Refuse trainable parameters that are not fp32 (at construction, and again at each step)."""
    half = half_precision_trainables(model)
    if half:
        when = (
            " since DPOTrainer was built (model.to(torch.bfloat16) or .half() after DPOTrainer()?)"
            if after_init
            else ""
        )
        raise ValueError(
            f"{len(half)} trainable parameters are not float32{when} (e.g. {half[0]}): AdamW would round "
            "small updates away. Load the model in float32 and let DPOConfig.mixed_precision run the "
            "compute in bf16/fp16."
        )


def check_inputs(tokenizer, pairs, config, output_dir) -> None:
    """Refuse, before any work, what would fail late or train silently wrong."""
    if getattr(tokenizer, "pad_token_id", None) is None:
        raise ValueError(
            "the tokenizer has no pad token, so batches cannot be padded: call "
            "dpo_utils.runtime.models.ensure_pad_token(tokenizer, model) first"
        )
    if not len(pairs):
        raise ValueError("pairs is empty: nothing to train on (prepare_preference_data makes the pairs from rows)")
    empty = [i for i, pair in enumerate(pairs) if not pair.chosen_ids or not pair.rejected_ids]
    if empty:
        raise ValueError(f"pairs {empty[:5]} have an empty completion (no token to score): remove them")
    if config.batch_size > len(pairs):
        raise ValueError(
            f"batch_size={config.batch_size} is larger than the {len(pairs)} pairs: every step would repeat "
            f"pairs within its batch. Use batch_size <= {len(pairs)}, or more data."
        )
    if output_dir is not None:
        path = Path(output_dir)
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            what = "output_dir" if existing == path else f"output_dir's parent {existing}"
            raise ValueError(
                f"output_dir={str(path)!r}: {what} is a file, not a folder; checkpoints could not be saved there"
            )
