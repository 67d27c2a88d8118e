"""Run presets for notebook 08: what to train, how, and on how much data, per kind of machine.

``pick_preset()`` chooses by hardware: ``large-gpu`` where bf16 is native (A100, H100, L4),
``t4`` on other GPUs (a free Colab T4: 16 GB, fp16 only), ``cpu`` otherwise (the offline
default: the bundled SmolLM2 and the preference pairs shipped in ``data/``). The reduced size
(``DPO_TUTORIAL_SIZE=reduced``) shrinks data and steps, never the code path.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from dpo_utils.config import DATA_DIR, is_reduced
from dpo_utils.models import DEFAULT_MODEL

HUB_DATASET = "trl-lib/ultrafeedback_binarized"
SHIPPED_DATASET = DATA_DIR / "sentiment_pairs.jsonl"
HUB_JUDGE = "Skywork/Skywork-Reward-V2-Qwen3-0.6B"


@dataclass(frozen=True)
class RunPreset:
    """Everything notebook 08 varies between machines. ``lora_rank=None`` means full fine-tuning."""

    name: str
    model: str
    dtype: str  # "float32", "float16" or "bfloat16": the dtype the model weights are loaded in
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
    beta: float = 0.1
    gradient_checkpointing: bool = False
    eval_prompts: int = 64
    max_new_tokens: int = 256


PRESETS = {
    "t4": RunPreset("t4", "Qwen/Qwen2.5-0.5B-Instruct", "float16", lora_rank=16, dataset=HUB_DATASET, judge=HUB_JUDGE,
                    train_pairs=2000, test_pairs=200, max_prompt_length=256, max_completion_length=256, batch_size=16,
                    micro_batch_size=2, steps=125, learning_rate=5e-5, gradient_checkpointing=True, eval_prompts=100),
    "large-gpu": RunPreset("large-gpu", "Qwen/Qwen2.5-1.5B-Instruct", "bfloat16", lora_rank=None, dataset=HUB_DATASET,
                           judge=HUB_JUDGE, train_pairs=8000, test_pairs=500, max_prompt_length=512, max_completion_length=512,
                           batch_size=32, micro_batch_size=8, steps=250, learning_rate=5e-7, eval_prompts=200),
    "cpu": RunPreset("cpu", DEFAULT_MODEL, "float32", lora_rank=16, dataset=str(SHIPPED_DATASET), judge="vader",
                     train_pairs=48, test_pairs=24, max_prompt_length=128, max_completion_length=48, batch_size=8,
                     micro_batch_size=8, steps=24, learning_rate=1e-4, eval_prompts=12, max_new_tokens=40),
}


def hardware_preset_name() -> str:
    """``large-gpu`` with native bf16, ``t4`` on other GPUs, ``cpu`` without a GPU."""
    if not torch.cuda.is_available():
        return "cpu"
    return "large-gpu" if torch.cuda.is_bf16_supported(including_emulation=False) else "t4"


def pick_preset(name: str | None = None) -> RunPreset:
    """The named preset (or the one for this machine), shrunk at the reduced size."""
    name = name or hardware_preset_name()
    if name not in PRESETS:
        raise ValueError(f"preset {name!r}: choose one of {sorted(PRESETS)}")
    preset = PRESETS[name]
    if is_reduced():
        preset = replace(preset, train_pairs=8, test_pairs=4, steps=2, batch_size=2, micro_batch_size=2,
                         eval_prompts=2, max_new_tokens=16)
    return preset
