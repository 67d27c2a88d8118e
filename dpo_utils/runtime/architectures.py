"""Public model architectures, random-initialised: benchmark the shapes without downloading weights.

``random_model("qwen2.5-0.5b")`` builds Qwen2.5-0.5B's architecture (from the config file in
``dpo_utils/runtime/architecture_configs/``) with weights drawn from a fixed seed. Speed and memory of a
training step depend on the shapes only, so a random model measures them as well as the real
one, on a machine that cannot reach the hub. Pair it with :func:`tokenizer`, the bundled
SmolLM2 tokenizer: its 49,152 ids fit every vocabulary listed here.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from dpo_utils.runtime.model_cache import offline_model_dir
from dpo_utils.runtime.models import ensure_pad_token

CONFIG_DIR = Path(__file__).resolve().parent / "architecture_configs"
ARCHITECTURES = {
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M (Llama: 30 layers, hidden 576, 9 heads / 3 KV heads)",
    "qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B (Qwen2: 24 layers, hidden 896, 14 heads / 2 KV heads)",
    "qwen2.5-1.5b": "Qwen/Qwen2.5-1.5B (Qwen2: 28 layers, hidden 1536, 12 heads / 2 KV heads)",
}


def _check(name: str) -> None:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}: choose one of {sorted(ARCHITECTURES)}")


def architecture_config(name: str, **overrides):
    """The transformers config of ``name`` (``LlamaConfig`` or ``Qwen2Config``), with ``overrides``."""
    from transformers import AutoConfig

    _check(name)
    fields = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    fields = {k: v for k, v in fields.items() if not k.startswith("_")} | overrides
    return AutoConfig.for_model(fields.pop("model_type"), **fields)


def tokenizer():
    """The bundled SmolLM2 tokenizer (offline), with a pad token that is not EOS."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(offline_model_dir())
    ensure_pad_token(tok)
    return tok


def random_model(
    name: str,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    pad_token_id: int | None = None,
    **overrides,
):
    """Architecture ``name`` with random weights from ``seed``, in eval mode on ``device``.

    The weights are drawn on ``device`` (fast for a GPU; the same seed gives other numbers on
    another device type). ``overrides`` change config fields, e.g. ``attn_implementation="eager"``.
    """
    from transformers import AutoModelForCausalLM

    attn = overrides.pop("attn_implementation", None)
    config = architecture_config(name, **overrides)
    if pad_token_id is not None:
        config.pad_token_id = pad_token_id
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(
            config, dtype=dtype, **({"attn_implementation": attn} if attn else {})
        )
    return model.eval()


def random_model_and_tokenizer(
    name: str, seed: int = 0, dtype: torch.dtype = torch.float32, device="cpu", **overrides
):
    """``(random_model(name, ...), tokenizer())``, the model's pad id set to the tokenizer's."""
    tok = tokenizer()
    return random_model(name, seed, dtype, device, pad_token_id=tok.pad_token_id, **overrides), tok


def count_parameters(model, embeddings: bool = True) -> int:
    """Parameters counted once (tied input/output embeddings once); ``embeddings=False`` leaves out
    the input embedding matrix (the ``N`` of "non-embedding parameters")."""
    total = sum(p.numel() for p in model.parameters())  # .parameters() yields a tied weight once
    return total if embeddings else total - model.get_input_embeddings().weight.numel()
