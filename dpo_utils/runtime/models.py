"""Load a causal LM and its tokenizer, online or offline.

``load_model_and_tokenizer("HuggingFaceTB/SmolLM2-135M-Instruct")`` tries the hub (or a local
folder). When the hub cannot be reached, or ``HF_HUB_OFFLINE=1``, it falls back to the bundled
SmolLM2-135M-Instruct (:mod:`dpo_utils.runtime.model_cache`: a Q4_1-quantised GGUF file, dequantised once
and cached), so every notebook runs without a network. Trained models load in float32; frozen ones
in the device's inference dtype (:func:`pick_device_and_dtype`).
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from dpo_utils.runtime.config import OFFLINE_MODEL_NOTE
from dpo_utils.runtime.model_cache import ModelNotAvailableError, offline_model_dir
from dpo_utils.runtime.precision import inference_dtype
from dpo_utils.runtime.progress import library_bars_hidden

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


# transformers 5 renamed gradient checkpointing to activation checkpointing; peft and TRL 1.16 still use the
# old names (``model.is_gradient_checkpointing``, ``args.gradient_checkpointing``), which warn on every use
CHECKPOINTING_RENAMES = r"`(is_)?gradient_checkpointing(_kwargs)?` is deprecated"


@contextmanager
def quiet_checkpointing_renames():
    """Hide transformers' FutureWarnings about the old ``gradient_checkpointing`` names inside the block.

    For calls into peft and TRL, which use those names themselves; every other warning still shows.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=CHECKPOINTING_RENAMES, category=FutureWarning)
        yield


def hub_is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to a true value."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def default_device() -> str:
    """``"cpu"`` without CUDA; with it, this process's GPU: ``cuda:LOCAL_RANK`` under a launcher
    (``torchrun``, ``accelerate launch``), the device accelerate will train on, so that N processes
    do not all load their copy onto GPU 0 first; plain ``"cuda"`` (the current GPU) otherwise."""
    if not torch.cuda.is_available():
        return "cpu"
    rank = os.environ.get("LOCAL_RANK")
    return f"cuda:{rank}" if rank is not None and int(rank) < torch.cuda.device_count() else "cuda"


def pick_device_and_dtype(device: str | None = None) -> tuple[torch.device, torch.dtype]:
    """The device, and the dtype for a model that is **not trained**: bf16 on GPUs that support
    it natively, fp16 on older GPUs (a T4), fp32 on CPU (bf16 or fp16 there too under
    ``DPO_TUTORIAL_GPU_PROFILE``, see :mod:`dpo_utils.runtime.precision`). Use it for judges, generation, frozen
    reference copies and a frozen LoRA base; trained weights stay fp32 (see
    :func:`load_model_and_tokenizer`)."""
    device = torch.device(device if device is not None else default_device())
    return device, inference_dtype(device)


def enable_activation_checkpointing(model, use_reentrant: bool = False) -> None:
    """Recompute each layer's activations in the backward pass (less memory, about 1/3 more compute).

    One call for every transformers version this package supports: 5.23 renamed
    ``gradient_checkpointing_enable`` to ``activation_checkpointing_enable`` (the old name warns),
    and older versions only have the old name. Works on peft-wrapped models, whose attribute
    lookups reach the transformers model. Non-reentrant checkpointing passes gradients to LoRA
    adapters even when the frozen embeddings' outputs do not require grad."""
    kwargs = {"use_reentrant": use_reentrant}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def ensure_pad_token(tokenizer, model=None) -> None:
    """Give the tokenizer a pad token that is not EOS (so EOS is never masked as padding)."""
    if tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return
    candidates = ["<|endoftext|>", "<|finetune_right_pad_id|>", "<pad>", "<|pad|>"]
    vocab = tokenizer.get_vocab()
    for token in candidates:
        if token in vocab and vocab[token] != tokenizer.eos_token_id:
            tokenizer.pad_token = token
            break
    else:
        tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
        if model is not None:
            model.resize_token_embeddings(len(tokenizer))
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id


def resolve_model_path(name_or_path: str, fallback: bool = True) -> str:
    """Return a loadable name or folder: the request, or the offline folder when the hub is out."""
    if Path(name_or_path).exists():
        return name_or_path
    if not hub_is_offline():
        try:
            from huggingface_hub import snapshot_download

            return snapshot_download(
                name_or_path, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken"]
            )
        except Exception as error:  # no network, unknown repo, rate limit...
            if not fallback:
                raise ModelNotAvailableError(f"could not fetch {name_or_path!r}: {error}") from error
            reason = f"the hub could not be reached ({error.__class__.__name__})"
    else:
        if not fallback:
            raise ModelNotAvailableError(f"HF_HUB_OFFLINE=1 and {name_or_path!r} is not a local folder")
        reason = "HF_HUB_OFFLINE=1"
    print(f"{reason}: using the bundled SmolLM2-135M-Instruct ({OFFLINE_MODEL_NOTE}) instead of {name_or_path!r}.")
    return str(offline_model_dir())


def load_model_and_tokenizer(
    name_or_path: str = DEFAULT_MODEL,
    device: str | None = None,
    dtype: torch.dtype | None = None,
    fallback: bool = True,
):
    """Load ``(model, tokenizer)`` ready for DPO: pad token set, model in eval mode on ``device``.

    Which dtype for what:

    - **float32 (the default) for any model you train in full.** AdamW's small updates are
      rounded away in bf16/fp16 weights; the trainer keeps fp32 master weights and runs the
      compute in half precision under autocast (``DPOConfig.mixed_precision``), and refuses
      half-precision trainable weights.
    - half precision (``pick_device_and_dtype(device)[1]``) only for weights that never
      change: a LoRA base (the adapters peft adds stay fp32), a judge, a model used only to
      generate or as a frozen reference.

    Args:
        name_or_path: hub id or local folder.
        device: ``"cuda"``, ``"cpu"``...; default: :func:`default_device` (this process's GPU
            under ``accelerate launch``/``torchrun``, else the current GPU, else the CPU).
        dtype: default ``torch.float32``.
        fallback: use the bundled SmolLM2 when the hub cannot be reached.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(name_or_path, fallback=fallback)
    device, _ = pick_device_and_dtype(device)
    with library_bars_hidden():
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    ensure_pad_token(tokenizer, model)
    return model.to(device).eval(), tokenizer
