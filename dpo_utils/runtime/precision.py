"""Mixed precision: fp32 master weights, half-precision compute, loss scaling for fp16.

Why not just load the model in bf16 and train it? AdamW's update at a small learning rate is
far below the spacing of bf16 numbers (8 significant bits: 1.0 is followed by 1.0078), so it
rounds away: at lr 5e-7 one step changes under 1 % of bf16 weights, against all of them in
fp32. The standard design (Micikevicius et al. 2018, "Mixed Precision Training") keeps:

- the **trained weights and the optimizer state in fp32** (master weights);
- the **compute** (matmuls, attention) under ``torch.autocast`` in bf16 where the GPU has it
  natively (Ampere and newer), in fp16 elsewhere (a T4), and in fp32 on CPU;
- for fp16 only, a **loss scaler**: fp16 gradients below ~6e-8 flush to zero, so the loss is
  multiplied by a large factor before backward and the gradients divided by it before the
  step; a step whose scaled gradients overflowed is skipped and the factor halved.

The names ``"no"``, ``"bf16"`` and ``"fp16"`` are accelerate's. accelerate's own fp16 path
runs only on accelerators (on CPU it silently trains in fp32), so the trainer uses PyTorch's
``torch.autocast`` and ``torch.amp.GradScaler`` directly, the same calls accelerate makes on
a GPU, and the T4 code path can be tested on a CPU.

**The GPU's precision path on a CPU.** ``DPO_TUTORIAL_GPU_PROFILE`` (read here, by
:func:`gpu_profile`, and nowhere else) makes everything that differs on a GPU behave as on
one, except the device itself: ``bf16`` acts as an Ampere-or-newer card with 80 GB (an A100 or
H100), ``t4`` as a T4 (16 GB, no native bf16, so fp16 with loss scaling). It sets the trainer's
default ``mixed_precision``, the dtype of frozen models (:func:`inference_dtype`), the precision
of sampling and evaluation, and the preset notebook 08 picks. CI exercises both profiles on every
run (``.ci/gpu-profile``): whole notebooks where the CPU has native bf16, and otherwise every
entry point's dtype on a tiny model plus notebook 08 end to end (docs/gpu.md).
"""

from __future__ import annotations

import os
from contextlib import nullcontext

import torch

MIXED_PRECISION = ("no", "bf16", "fp16")
COMPUTE_DTYPE = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


GPU_PROFILE_VARIABLE = "DPO_TUTORIAL_GPU_PROFILE"
GPU_PROFILES = {
    "bf16": dict(mixed_precision="bf16", memory_gib=80.0),
    "t4": dict(mixed_precision="fp16", memory_gib=15.0),
}


def gpu_profile() -> str | None:
    """``"bf16"`` or ``"t4"`` when ``DPO_TUTORIAL_GPU_PROFILE`` asks for the GPU's precision path on
    this machine's device; ``None`` (unset or empty) to follow the real hardware."""
    value = os.environ.get(GPU_PROFILE_VARIABLE, "").strip().lower()
    if value and value not in GPU_PROFILES:
        raise ValueError(f"{GPU_PROFILE_VARIABLE}={value!r}: use one of {sorted(GPU_PROFILES)}, or leave it unset")
    return value or None


def default_mixed_precision(device: torch.device | str) -> str:
    """``"bf16"`` on GPUs with native bf16, ``"fp16"`` on other GPUs (a T4), ``"no"`` on CPU;
    under ``DPO_TUTORIAL_GPU_PROFILE``, the profile's precision on any device."""
    profile = gpu_profile()
    if profile:
        return GPU_PROFILES[profile]["mixed_precision"]
    device = torch.device(device)
    if device.type != "cuda":
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"


def resolve_mixed_precision(value: str | None, device: torch.device | str) -> str:
    """``value`` when given (checked), else the default for ``device``."""
    return check_mixed_precision(value) if value is not None else default_mixed_precision(device)


def inference_dtype(device: torch.device | str) -> torch.dtype:
    """The dtype for a model that is **not trained** (judge, frozen reference, LoRA base):
    the compute dtype of :func:`default_mixed_precision` (fp32 on a CPU without a profile)."""
    return COMPUTE_DTYPE[default_mixed_precision(device)]


def check_mixed_precision(value: str) -> str:
    if value not in MIXED_PRECISION:
        raise ValueError(f"mixed_precision={value!r}: choose one of {MIXED_PRECISION}")
    return value


def autocast(device: torch.device, mixed_precision: str):
    """The autocast context for ``mixed_precision`` on ``device`` (a no-op for ``"no"``)."""
    if mixed_precision == "no":
        return nullcontext()
    return torch.autocast(device.type, dtype=COMPUTE_DTYPE[mixed_precision])


def grad_scaler(device: torch.device, mixed_precision: str) -> torch.amp.GradScaler:
    """A loss scaler for fp16; a pass-through (``enabled=False``) for bf16 and fp32."""
    return torch.amp.GradScaler(device.type, enabled=mixed_precision == "fp16")


def half_precision_trainables(model) -> list[str]:
    """Names of trainable parameters that are not fp32 (AdamW would round their updates away)."""
    return [name for name, p in model.named_parameters() if p.requires_grad and p.dtype != torch.float32]


def fraction_changed(before: dict[str, torch.Tensor], model) -> float:
    """Share of trainable weight elements that differ from ``before`` (a ``{name: tensor}`` copy)."""
    changed = total = 0
    for name, p in model.named_parameters():
        if name in before:
            changed += (p.detach() != before[name]).sum().item()
            total += p.numel()
    return changed / max(total, 1)


def trainable_copy(model) -> dict[str, torch.Tensor]:
    """A detached copy of the trainable weights, for :func:`fraction_changed`."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
