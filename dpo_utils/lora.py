"""LoRA adapters with peft, and the reference model for free: the same weights, adapters disabled.

A new LoRA adapter starts with ``B = 0``, so before the first update the adapted model *is* the
base model: reference log-probs precomputed at that point are the reference's, and later the
reference is recovered by disabling the adapters. No second copy of the model is ever loaded.
"""

from __future__ import annotations

from contextlib import contextmanager

from dpo_utils.runtime.models import quiet_checkpointing_renames


def attach_lora(model, rank: int = 16, alpha: int | None = None, dropout: float = 0.0, target_modules="all-linear"):
    """Wrap ``model`` in a fresh LoRA adapter (``alpha`` defaults to ``2 * rank``); only the adapter trains."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha or 2 * rank,
        lora_dropout=dropout,
        target_modules=target_modules,
        task_type="CAUSAL_LM",
    )
    with quiet_checkpointing_renames():  # peft reads model.is_gradient_checkpointing
        return get_peft_model(model, config)


def load_lora_adapter(base, adapter_dir, trainable: bool = False):
    """``base`` with the LoRA adapter saved in ``adapter_dir`` (``PeftModel.from_pretrained``)."""
    from peft import PeftModel

    with quiet_checkpointing_renames():  # peft reads model.is_gradient_checkpointing
        return PeftModel.from_pretrained(base, adapter_dir, is_trainable=trainable)


def is_lora(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


@contextmanager
def reference_of(policy, reference=None):
    """Yield the reference model: ``reference`` when given (full fine-tuning keeps a frozen copy),
    else ``policy`` itself with its LoRA adapters disabled for the duration of the block."""
    if reference is not None:
        yield reference
    elif is_lora(policy):
        with policy.disable_adapter():
            yield policy
    else:
        raise ValueError("full fine-tuning needs the frozen reference model passed as `reference`")


def trainable_parameters(model) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    return (sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters()))
