r"""How much accelerator memory one DPO training step needs: a small estimate, checked against
measured peaks.

For a decoder of :math:`L` layers, hidden size :math:`h`, MLP size :math:`i`, vocabulary
:math:`V`, with :math:`N` parameters of which :math:`N_t` are trained, a micro-batch of
:math:`T` tokens (with prompt sharing, ``logprob_mode`` ``"auto"``, ``"shared"`` or ``"packed"``:
prompt + chosen + rejected per pair; without: chosen and rejected sequences, each prompt +
completion) of which :math:`T_c` are completion tokens,
compute in :math:`c` bytes (2 under bf16/fp16 autocast, 4 in fp32) and frozen weights stored
in :math:`w` bytes:

.. math::

    M = \underbrace{4N_t + w(N - N_t)}_{\text{weights}}
      + \underbrace{4N_t}_{\text{gradients}}
      + \underbrace{8N_t}_{\text{AdamW}}
      + \underbrace{c N_{32}\,[c<4]}_{\text{autocast copies}}
      + \underbrace{T L\,(8h + c(4h + 4i))}_{\text{activations}}
      + \underbrace{T_V V (c + 8)}_{\text{logits}}

where :math:`N_{32}` counts the fp32 weights that autocast casts to the compute dtype (kept
for backward). Activations per token and layer: the fp32 inputs of the two RMSNorms (:math:`8h` bytes) and,
in the compute dtype, the inputs of the attention and MLP projections, the attention output
and the MLP's gate, up, activation and product (:math:`\approx 4h + 4i` values). With
activation checkpointing only each layer's fp32 input is kept (:math:`4h` per token and
layer) and one layer is recomputed at a time. Logits: :math:`T_V` positions get a
:math:`V`-wide row in the compute dtype plus fp32 log-softmax and its gradient: one chunk of
completion positions in every ``logprob_mode`` but ``"full"``, every token in ``"full"``.

The formula ignores the CUDA context (~0.5 GB), allocator fragmentation and attention
workspaces: keep a margin. ``tests/test_memory.py`` compares it with peaks measured on CPU.
"""

from __future__ import annotations

GIB = 2**30


def parameter_count(config) -> int:
    """Parameters of the model that ``config`` describes, counted on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


SHARING_MODES = ("auto", "shared", "packed")  # logprob modes that compute each prompt once


def step_tokens(
    micro_batch_pairs: int, prompt_length: int, completion_length: int, logprob_mode: str = "auto"
) -> tuple[int, int]:
    """``(T, T_c)``: tokens and completion tokens of one micro-batch at the given lengths, computed
    in ``logprob_mode`` (:class:`~dpo_utils.trainer.DPOConfig`'s)."""
    completions = 2 * micro_batch_pairs * completion_length
    prompts = micro_batch_pairs * prompt_length * (1 if logprob_mode in SHARING_MODES else 2)
    return prompts + completions, completions


def training_memory(
    config,
    tokens: int,
    completion_tokens: int,
    trainable: int | None = None,
    mixed_precision: str = "bf16",
    frozen_weight_bytes: int = 4,
    checkpointing: bool = False,
    logprob_mode: str = "auto",
    chunk_size: int = 256,
) -> dict[str, float]:
    """The terms of the formula above, in bytes, and their ``"total"``.

    ``trainable``: trained parameters (default: all, full fine-tuning; LoRA: the adapters).
    ``logprob_mode``: :class:`~dpo_utils.trainer.DPOConfig`'s (``"full"`` computes logits at every token).
    """
    n = parameter_count(config)
    n_t = n if trainable is None else trainable
    c = 4 if mixed_precision == "no" else 2
    h, i, layers, vocab = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    per_layer = 8 * h + c * (4 * h + 4 * i)
    if checkpointing:
        activations = tokens * layers * 4 * h + tokens * per_layer
    else:
        activations = tokens * layers * per_layer
    logit_positions = tokens if logprob_mode == "full" else min(chunk_size, completion_tokens)
    terms = {
        "weights": 4 * n_t + frozen_weight_bytes * (n - n_t),
        "gradients": 4 * n_t,
        "adamw": 8 * n_t,
        "autocast_copies": c * (n if frozen_weight_bytes == 4 else n_t) if c < 4 else 0,
        "activations": activations,
        "logits": logit_positions * vocab * (c + 8),
    }
    return terms | {"total": sum(terms.values())}


def describe(terms: dict[str, float]) -> str:
    """One line, in GiB."""
    return ", ".join(f"{k} {v / GIB:.2f}" for k, v in terms.items()) + " GiB"
