"""Run presets for notebook 08: what to train, how, and on how much data, per kind of machine.

``pick_preset()`` chooses by the GPU's memory and capability (or ``DPO_TUTORIAL_PRESET``):

============  ==========================  =====================================================
preset        cards                       run
============  ==========================  =====================================================
``t4``        T4 (16 GB), any GPU without  Qwen2.5-0.5B, LoRA r16 on an fp16 base, fp16 autocast
              native bf16 or under 20 GiB  with loss scaling, activation checkpointing
``mid-gpu``   L4, A10 (24 GB), A100-40GB   Qwen2.5-0.5B, full fine-tuning (fp32 weights), bf16
                                           autocast, activation checkpointing
``large-gpu`` A100-80GB, H100, H200        Qwen2.5-1.5B, full fine-tuning (fp32 weights), bf16
                                           autocast, no checkpointing
``cpu``       no GPU (the offline default) the bundled SmolLM2-135M, LoRA, the shipped pairs
============  ==========================  =====================================================

Each GPU preset's step is sized by :mod:`dpo_utils.runtime.memory` to fit the smallest card it names
with a margin (``tests/test_gpu_run_parts.py`` checks the estimate). Learning rates follow the
training mode: full fine-tuning at 5e-7 (the usual DPO value, e.g. Zephyr's), LoRA 100x
higher, since the adapters start at zero and carry the whole update. The reduced size
(``DPO_TUTORIAL_SIZE=reduced``) shrinks data and steps, never the code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch

from dpo_utils.runtime.architectures import architecture_config
from dpo_utils.runtime.config import is_reduced
from dpo_utils.runtime.memory import GIB, step_tokens, training_memory
from dpo_utils.runtime.models import DEFAULT_MODEL, hub_is_offline
from dpo_utils.runtime.precision import GPU_PROFILES, gpu_profile

HUB_DATASET = "trl-lib/ultrafeedback_binarized"
SHIPPED_DATASET = "data/sentiment_pairs.jsonl"  # in this repository: hub_data finds it, and it prints as is
HUB_JUDGE = "Skywork/Skywork-Reward-V2-Qwen3-0.6B"
PRESET_VARIABLE = "DPO_TUTORIAL_PRESET"


@dataclass(frozen=True)
class RunPreset:
    """Everything notebook 08 varies between machines. ``lora_rank=None`` means full fine-tuning."""

    name: str
    model: str
    architecture: str  # dpo_utils.runtime.architectures name of `model`, for memory checks without downloads
    dtype: str  # dtype the weights are loaded in: "float32" when trained; a frozen LoRA base may be half
    mixed_precision: str  # compute precision (DPOConfig.mixed_precision)
    lora_rank: int | None
    dataset: str
    judge: str  # reward model that judges win rates; "vader" for the offline sentiment data
    train_pairs: int
    test_pairs: int
    max_prompt_length: int
    max_completion_length: int
    batch_size: int
    micro_batch_size: int
    steps: int
    learning_rate: float
    card_memory_gib: float  # usable memory of the smallest card this preset is for
    beta: float = 0.1
    activation_checkpointing: bool = False
    eval_prompts: int = 64
    max_new_tokens: int = 256


_HUB = dict(dataset=HUB_DATASET, judge=HUB_JUDGE, train_pairs=8000, test_pairs=500, batch_size=32, steps=250)
PRESETS = {
    "t4": RunPreset(
        "t4",
        "Qwen/Qwen2.5-0.5B-Instruct",
        "qwen2.5-0.5b",
        "float16",
        "fp16",
        lora_rank=16,
        **(_HUB | dict(train_pairs=2000, test_pairs=200, batch_size=16, steps=125)),
        max_prompt_length=256,
        max_completion_length=256,
        micro_batch_size=2,
        learning_rate=5e-5,
        card_memory_gib=14.7,
        activation_checkpointing=True,
        eval_prompts=100,
    ),
    "mid-gpu": RunPreset(
        "mid-gpu",
        "Qwen/Qwen2.5-0.5B-Instruct",
        "qwen2.5-0.5b",
        "float32",
        "bf16",
        lora_rank=None,
        **_HUB,
        max_prompt_length=512,
        max_completion_length=512,
        micro_batch_size=4,
        learning_rate=5e-7,
        card_memory_gib=22.0,
        activation_checkpointing=True,
        eval_prompts=200,
    ),
    "large-gpu": RunPreset(
        "large-gpu",
        "Qwen/Qwen2.5-1.5B-Instruct",
        "qwen2.5-1.5b",
        "float32",
        "bf16",
        lora_rank=None,
        **_HUB,
        max_prompt_length=512,
        max_completion_length=512,
        micro_batch_size=4,
        learning_rate=5e-7,
        card_memory_gib=79.0,
        eval_prompts=200,
    ),
    "cpu": RunPreset(
        "cpu",
        DEFAULT_MODEL,
        "smollm2-135m",
        "float32",
        "no",
        lora_rank=16,
        dataset=SHIPPED_DATASET,
        judge="vader",
        train_pairs=96,
        test_pairs=40,
        max_prompt_length=128,
        max_completion_length=129,  # the shipped completions: up to 128 tokens, then EOS
        batch_size=8,
        micro_batch_size=8,
        steps=24,
        learning_rate=1e-4,
        card_memory_gib=float("inf"),
        eval_prompts=20,
        max_new_tokens=128,
    ),
}


def hardware_preset_name() -> str:
    """The preset for this machine's first GPU, by memory and native bf16; ``cpu`` without one.
    Under ``DPO_TUTORIAL_GPU_PROFILE`` (:mod:`dpo_utils.runtime.precision`), the preset of the profile's card."""
    profile = gpu_profile()
    if profile:
        return preset_for_card(GPU_PROFILES[profile]["memory_gib"], profile == "bf16")
    if not torch.cuda.is_available():
        return "cpu"
    memory_gib = torch.cuda.get_device_properties(0).total_memory / GIB
    return preset_for_card(memory_gib, torch.cuda.is_bf16_supported(including_emulation=False))


def preset_for_card(memory_gib: float, native_bf16: bool) -> str:
    if memory_gib < 20 or not native_bf16:
        return "t4"
    return "mid-gpu" if memory_gib < 70 else "large-gpu"


def pick_preset(name: str | None = None) -> RunPreset:
    """The named preset (else ``DPO_TUTORIAL_PRESET``, else the one for this machine), shrunk at the reduced size.

    With ``HF_HUB_OFFLINE=1`` a GPU preset keeps its model, precision and training settings (the
    model itself falls back to the bundled SmolLM2) but trains on the shipped pairs, judged by VADER."""
    name = name or os.environ.get(PRESET_VARIABLE) or hardware_preset_name()
    if name not in PRESETS:
        raise ValueError(f"preset {name!r}: choose one of {sorted(PRESETS)}")
    preset = PRESETS[name]
    if preset.dataset == HUB_DATASET and hub_is_offline():  # same code path, offline data and judge
        print(f"HF_HUB_OFFLINE=1: preset {name!r} uses the shipped pairs and the VADER judge (and the bundled model)")
        preset = replace(
            preset,
            dataset=SHIPPED_DATASET,
            judge="vader",
            train_pairs=96,
            test_pairs=40,
            eval_prompts=20,
            max_new_tokens=128,
        )
    if is_reduced():
        preset = replace(
            preset,
            train_pairs=8,
            test_pairs=4,
            steps=2,
            batch_size=2,
            micro_batch_size=2,
            eval_prompts=2,
            max_new_tokens=16,
        )
    return preset


def preset_memory(preset: RunPreset) -> dict[str, float]:
    """:func:`dpo_utils.runtime.memory.training_memory` of one step at the preset's full lengths."""
    config = architecture_config(preset.architecture)
    tokens, completion = step_tokens(preset.micro_batch_size, preset.max_prompt_length, preset.max_completion_length)
    trainable = None
    if preset.lora_rank:  # all-linear LoRA: r x (in + out) per projection
        h, i, kv = (
            config.hidden_size,
            config.intermediate_size,
            config.num_key_value_heads * config.hidden_size // config.num_attention_heads,
        )
        per_layer = preset.lora_rank * ((h + h) * 2 + (h + kv) * 2 + (h + i) * 2 + (i + h))
        trainable = per_layer * config.num_hidden_layers
    frozen_bytes = torch.finfo(getattr(torch, preset.dtype)).bits // 8
    return training_memory(
        config,
        tokens,
        completion,
        trainable,
        preset.mixed_precision,
        frozen_bytes,
        preset.activation_checkpointing,
    )
