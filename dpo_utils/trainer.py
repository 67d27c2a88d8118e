"""A small, readable DPO training loop (and Preferred-FT, its SFT baseline).

Design choices, each for speed, memory or correctness:

- reference log-probs are computed **once** before training (the reference model need not stay
  in memory, and no reference forward runs per step);
- chosen and rejected go through the model in **one** forward pass, and by default each prompt
  is computed once and shared by both completions (prefix sharing);
- the LM head runs on completion positions only, in chunks (no ``batch x seq x vocab`` tensor);
- **mixed precision**: trained weights and AdamW state stay fp32; the compute runs under
  autocast in bf16 or fp16 (with a loss scaler), see :mod:`dpo_utils.runtime.precision`;
- a step whose gradients are not finite is **skipped**, never applied, and counted;
- gradient accumulation over micro-batches, clipping, linear warmup, AdamW;
- the same loop runs on several processes under ``accelerate launch`` or ``torchrun``
  (accelerate's data parallelism: each process takes its share of every batch).

Logged metrics use TRL's names: ``loss``, ``rewards/chosen``, ``rewards/rejected``,
``rewards/accuracies``, ``rewards/margins``, ``logps/chosen``, ``logps/rejected``.
Checkpoints hold model, optimizer, scheduler, loss scaler, step, history and a fingerprint of
the config, the data and the starting model, so an interrupted run resumes and ends exactly where
an uninterrupted one would, and a checkpoint of *another* run is never resumed by mistake. They
hold tensors and plain values only and are read with ``torch.load(weights_only=True)``, so a
planted checkpoint cannot run code. A step
whose forward pass gives a NaN or inf log-prob or loss is skipped like one with non-finite
gradients; settings and inputs that cannot train are refused when the config and trainer are built.
"""

from __future__ import annotations

import math
import numbers
import random
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Literal, get_args

import torch

from dpo_utils.checkpoints import (
    CHECKPOINT_DIR,
    FINAL_DIR,
    MODEL_FINGERPRINT_VERSION,
    StaleCheckpointError,
    check_run,
    load_state,
    model_fingerprint,
    repair_folder,
    run_fingerprint,
    save_final,
    state_path,
    write_state,
)
from dpo_utils.data import TokenizedPair, collate_pairs, collate_shared_prompt
from dpo_utils.logprobs import (
    PackedBatch,
    checkpointing_active,
    checkpointing_enabled,
    completion_logprobs_lean,
    model_sequence_logprobs,
    pack_pairs,
    packed_pair_logprobs,
    packed_positions,
    shared_prompt_logprobs,
)
from dpo_utils.losses import LOSS_TYPES, OBJECTIVES, allow_non_finite, preference_loss
from dpo_utils.numerics import check_finite_logprobs
from dpo_utils.runtime.precision import (
    autocast,
    check_mixed_precision,
    grad_scaler,
    half_precision_trainables,
    resolve_mixed_precision,
)
from dpo_utils.runtime.progress import progress_bar

LogprobMode = Literal["auto", "full", "lean", "shared", "packed", "packed-unshared"]
LOGPROB_MODES = {  # every mode gives the same log-probs and gradients, up to float rounding
    "auto": "per batch 'shared' or 'packed', by their padding (resolve_logprob_mode); 'packed' under checkpointing",
    "full": "each sequence prompt + completion, padded, logits at every position (the textbook computation)",
    "lean": "as 'full', with the LM head on completion positions only, in chunks (no batch x seq x vocab tensor)",
    "shared": "each prompt once, its key/value cache shared by chosen and rejected (not under checkpointing)",
    "packed": "prompt + chosen + rejected of each pair packed into rows without padding, block-diagonal attention",
    "packed-unshared": "as 'packed', with prompt + chosen and prompt + rejected as separate blocks",
}
assert tuple(LOGPROB_MODES) == get_args(LogprobMode)
# "auto" computes a batch packed when packing saves at least this share of the positions the shared
# layout computes (its padding, beyond the packed rows' own at row ends). Measured with SmolLM2-135M, 4
# pairs of ~64 + 64 tokens, on a 2-core CPU (docs/speed.md): packed / shared time was 1.17 at no saving
# and 0.64 at a 37 % saving for whole steps on 2 threads, break-even near 15 % if linear in between;
# forward + backward on 1 thread, 0.96 at no saving, 0.80-0.94 at 8-19 % and 0.63-0.73 from 22 %.
# From 20 % both expect packing to win.
PACKED_MIN_SAVING = 0.2
SHARED_UNDER_CHECKPOINTING = (
    "logprob_mode='shared' keeps each prompt's key/value cache, which activation checkpointing cannot keep: "
    "use logprob_mode='auto' (packed under checkpointing) or 'packed' (the same prompt sharing, in one packed "
    "forward), or turn activation checkpointing off"
)


def check_logprob_mode(mode) -> None:
    """Refuse a ``logprob_mode`` that is not one of :data:`LOGPROB_MODES`."""
    if not isinstance(mode, str) or mode not in LOGPROB_MODES:
        raise ValueError(f"logprob_mode={mode!r}: choose one of {', '.join(map(repr, LOGPROB_MODES))}")


@dataclass
class DPOConfig:
    """Training settings. ``batch_size`` pairs make one optimizer step."""

    beta: float = 0.1
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    objective: str = "dpo"  # "dpo"; "sft" (Preferred-FT); reference-free "simpo", "orpo" (beta = ORPO's lambda)
    nll_weight: float = 0.0  # DPO + nll_weight x chosen NLL per token ("RPO"); dpo only
    simpo_gamma: float = 0.5  # SimPO's target margin
    learning_rate: float = 5e-6
    batch_size: int = 8
    micro_batch_size: int | None = None  # pairs per forward; None = batch_size
    max_steps: int = 40
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    seed: int = 0
    save_every: int | None = None
    save_final_model: bool = True  # save_pretrained into output_dir/final at the end
    padding_side: str = "right"
    logprob_mode: LogprobMode = "auto"  # how a batch is laid out for the forward pass: see LOGPROB_MODES
    logits_chunk_size: int = 256  # completion positions per LM-head chunk
    mixed_precision: str | None = None  # "no", "bf16", "fp16"; None: bf16 on recent GPUs, fp16 on a T4, "no" on CPU
    activation_checkpointing: bool = False  # recompute activations in backward: less memory, ~1/3 more compute
    max_consecutive_skips: int = 10  # stop when this many steps in a row had non-finite gradients
    fused_adamw: bool | None = None  # None: the fused AdamW kernel on GPU, PyTorch's default elsewhere
    compile: bool = False  # torch.compile the decoder (for GPUs: pays off over many steps)

    def __post_init__(self):
        """Refuse settings that cannot train, here rather than after the reference pass: a value of the
        wrong type (per the field's annotation; a bool is not a number here) is a ``TypeError``, a
        value out of range or not finite a ``ValueError``; both name the setting and its value."""
        _check_setting_types(self)
        for name, (allowed, rule) in SETTING_RANGES.items():
            value = getattr(self, name)
            if value is None or (isinstance(value, float) and math.isinf(value) and name in INFINITE_ALLOWED):
                continue
            if not math.isfinite(value):
                infinite = " or inf" if name in INFINITE_ALLOWED else ""
                raise ValueError(f"{name}={value!r} must be a finite number{infinite}")
            if allowed is not None and not allowed(value):
                raise ValueError(f"{name}={value!r} must be {rule}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective={self.objective!r}: choose one of {OBJECTIVES}")
        if self.nll_weight and self.objective != "dpo":
            raise ValueError("nll_weight adds an NLL term to DPO; use it with objective='dpo'")
        if self.mixed_precision is not None:
            check_mixed_precision(self.mixed_precision)
        if self.objective != "sft" and not self.beta > 0:
            raise ValueError(f"beta={self.beta} must be positive (the strength of the KL constraint; ORPO's lambda)")
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type={self.loss_type!r}: choose one of {LOSS_TYPES}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(
                f"label_smoothing={self.label_smoothing} must be in [0, 0.5): it is the assumed share of "
                "flipped labels, and at 0.5 the labels carry no information"
            )
        if self.label_smoothing and self.loss_type not in ("sigmoid", "robust"):
            raise ValueError(
                f"label_smoothing is not defined for loss_type={self.loss_type!r} (only 'sigmoid' and 'robust')"
            )
        if self.micro_batch_size is not None and (
            self.micro_batch_size < 1 or self.batch_size % self.micro_batch_size
        ):
            divisors = [d for d in range(1, self.batch_size + 1) if self.batch_size % d == 0]
            raise ValueError(
                f"micro_batch_size={self.micro_batch_size} must divide batch_size={self.batch_size} "
                f"(one of {divisors}), so that every micro-batch has the same size"
            )
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side={self.padding_side!r}: choose 'left' or 'right'")
        check_logprob_mode(self.logprob_mode)
        if self.logprob_mode == "shared" and self.activation_checkpointing:
            raise ValueError(SHARED_UNDER_CHECKPOINTING)


# Range of each numeric setting: (test, what the error says it must be); every value must also be
# finite (+inf only where INFINITE_ALLOWED). beta, label_smoothing and micro_batch_size are checked
# in __post_init__ (beta's sign matters only with a reference; micro_batch_size must divide batch_size).
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


def _check_setting_types(config: DPOConfig) -> None:
    """Refuse a setting whose value has none of the types its annotation names (``int | None``: either)."""
    for item in fields(config):
        value, kinds = getattr(config, item.name), item.type.split(" | ")
        if not any(TYPE_CHECKS[kind][0](value) for kind in kinds):
            expected = " or ".join(TYPE_CHECKS[kind][1] for kind in kinds)
            raise TypeError(f"{item.name}={value!r} must be {expected}, not {type(value).__name__}")


NON_FINITE_KEY = "_non_finite"  # per-micro-batch flag gathered with the metrics, not logged


class NonFiniteTrainingError(RuntimeError):
    """Too many optimizer steps in a row had inf or NaN gradients."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped :meth:`DPOTrainer.train`; the message says the step reached and the checkpoint to resume from."""


def resolve_logprob_mode(mode: str, pairs: list[TokenizedPair], checkpointing: bool = False) -> str:
    """The mode that computes ``pairs``: ``mode`` itself, unless it is ``"auto"``.

    ``"auto"`` is ``"packed"`` under activation checkpointing (``checkpointing``: it is on and the
    model is training), where no key/value cache can be kept. Otherwise it counts the positions each
    layout would compute: the shared layout pads every prompt to the longest prompt and every
    completion to the longest completion (``B x (Lp + 2 Lc)``); the packed layout pads row ends only
    (:func:`~dpo_utils.logprobs.packed_positions`). Packed attention is masked over whole rows and
    can be the slower at equal positions; ``"auto"`` packs when packing saves at least
    ``PACKED_MIN_SAVING`` (20 %) of the shared layout's positions, else shares. ``"shared"`` under
    checkpointing is refused (``ValueError``), not silently changed.
    """
    check_logprob_mode(mode)
    if mode == "shared" and checkpointing:
        raise ValueError(SHARED_UNDER_CHECKPOINTING)
    if mode != "auto":
        return mode
    if checkpointing:
        return "packed"
    longest_prompt = max(len(p.prompt_ids) for p in pairs)
    longest_completion = max(max(len(p.chosen_ids), len(p.rejected_ids)) for p in pairs)
    shared = len(pairs) * (longest_prompt + 2 * longest_completion)
    return "packed" if packed_positions(pairs) <= (1 - PACKED_MIN_SAVING) * shared else "shared"


def _concrete(mode: str) -> str:
    check_logprob_mode(mode)
    if mode == "auto":
        raise ValueError("logprob_mode='auto' depends on the batch: resolve it first with resolve_logprob_mode")
    return mode


def collate_batch(
    pairs: list[TokenizedPair], pad_token_id: int, padding_side: str = "right", mode: str = "full"
) -> dict:
    """The tensors :func:`logprobs_of_batch` needs for ``mode``, a mode other than ``"auto"``
    (:func:`resolve_logprob_mode` gives the one ``"auto"`` picks for these pairs)."""
    mode = _concrete(mode)
    if mode.startswith("packed"):
        return vars(pack_pairs(pairs, share_prompt=mode == "packed", pad_token_id=pad_token_id))
    if mode == "shared":
        return collate_shared_prompt(pairs, pad_token_id)
    batch = collate_pairs(pairs, pad_token_id, padding_side)
    return {k: batch[k] for k in ("input_ids", "attention_mask", "completion_mask")}


def logprobs_of_batch(model, batch: dict, mode: str = "full", chunk_size: int = 256) -> torch.Tensor:
    """Summed completion log-probs of the ``2B`` sequences of a batch collated for ``mode``, chosen first."""
    mode = _concrete(mode)
    if mode.startswith("packed"):
        return packed_pair_logprobs(model, PackedBatch(**batch), chunk_size=chunk_size)
    if mode == "shared":
        return shared_prompt_logprobs(model, *batch.values(), chunk_size=chunk_size)
    if mode == "lean":
        return completion_logprobs_lean(model, *batch.values(), chunk_size=chunk_size)
    return model_sequence_logprobs(model, *batch.values())


def batch_logprobs(
    model,
    pairs: list[TokenizedPair],
    pad_token_id: int,
    padding_side: str = "right",
    mode: str = "full",
    chunk_size: int = 256,
):
    """Chosen and rejected sequence log-probs of ``pairs``, chosen and rejected in one pass.

    ``mode``: one of :data:`LOGPROB_MODES` (``"auto"`` is resolved for these pairs by
    :func:`resolve_logprob_mode`, as the trainer resolves it). All give the same values and gradients.
    Returns ``(chosen, rejected, token_counts)``; ``token_counts`` has the completion lengths
    of all ``2B`` sequences, chosen first.
    """
    device = next(model.parameters()).device
    mode = resolve_logprob_mode(mode, pairs, checkpointing_active(model))
    batch = {k: v.to(device) for k, v in collate_batch(pairs, pad_token_id, padding_side, mode).items()}
    logps = logprobs_of_batch(model, batch, mode, chunk_size)
    return logps[: len(pairs)], logps[len(pairs) :], batch["completion_mask"].sum(-1)


class PolicyLogprobs(torch.nn.Module):
    """The policy as a module whose forward maps a batch collated for ``mode`` to sequence log-probs.

    The lean, shared and packed modes call the decoder and the LM head separately, bypassing the
    model's own ``forward``; wrapping the whole computation in one module is what lets
    distributed data parallelism (which hooks ``forward``) see it. ``mode`` is given per batch,
    since ``"auto"`` resolves differently from batch to batch.
    """

    def __init__(self, model, chunk_size: int):
        super().__init__()
        self.model, self.chunk_size = model, chunk_size

    def forward(self, batch: dict, mode: str) -> torch.Tensor:
        return logprobs_of_batch(self.model, batch, mode, self.chunk_size)


@torch.no_grad()
def compute_reference_logprobs(
    model,
    pairs,
    pad_token_id,
    batch_size=8,
    padding_side="right",
    mode="shared",
    chunk_size=256,
    mixed_precision=None,
    layout=None,
) -> torch.Tensor:
    """``(n_pairs, 2)`` log-probs of chosen and rejected under ``model``, without gradients.

    ``mixed_precision=None`` takes the default for the model's device
    (:func:`~dpo_utils.runtime.precision.default_mixed_precision`). ``layout`` lists the batches as pair
    indices (default: consecutive batches of ``batch_size``). For the reference log-probs of a
    training run, use :func:`reference_logprobs`, which takes every setting from the run's config.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    precision = resolve_mixed_precision(mixed_precision, device)
    layout = layout or [
        list(range(start, min(start + batch_size, len(pairs)))) for start in range(0, len(pairs), batch_size)
    ]
    logps = torch.zeros(len(pairs), 2)
    for indices in progress_bar(layout, desc="reference log-probs", leave=False):
        with autocast(device, precision):
            chosen, rejected, _ = batch_logprobs(
                model, [pairs[i] for i in indices], pad_token_id, padding_side, mode, chunk_size
            )
        logps[indices] = torch.stack([chosen, rejected], dim=-1).float().cpu()
    model.train(was_training)
    check_finite_logprobs(logps, precision, "log-probs of the preference pairs", model)
    return logps


def first_epoch_layout(n_pairs: int, config: DPOConfig, num_processes: int = 1) -> list[list[int]]:
    """The micro-batches of the first epoch's training forwards, in order (each process's share
    of each step, split as :meth:`DPOTrainer.accumulate_gradients` splits it), then the pairs the
    first epoch does not reach. Reference log-probs computed in this layout are what a policy
    equal to the reference computes during that epoch, to the last bit: in half precision the
    rounding of a sequence's log-prob depends on the shapes of the batch it is in."""
    layout = []
    for step in range(max(n_pairs // config.batch_size, 1)):
        indices = batch_indices(step, n_pairs, config.batch_size, config.seed)
        for rank in range(num_processes):
            mine = indices[rank::num_processes]
            micro = config.micro_batch_size or len(mine)
            layout += [mine[start : start + micro] for start in range(0, len(mine), micro)]
    reached = {i for batch in layout for i in batch}
    rest = [i for i in range(n_pairs) if i not in reached]
    micro = config.micro_batch_size or config.batch_size
    return layout + [rest[start : start + micro] for start in range(0, len(rest), micro)]


@dataclass
class ReferenceLogprobs:
    """The reference's log-probs of every pair (``values[i] = (chosen, rejected)``), the compute
    precision they were computed in and how they were batched (``batching``, from
    :func:`reference_batching`; ``None`` if unknown).

    A policy equal to the reference must start at loss log 2. :class:`DPOTrainer` therefore refuses
    them when its own precision differs, since rounding noise would then be as large as the first
    steps' signal. Under half precision it also computes its own when it would batch the pairs
    differently (another seed, batch size, padding side or log-prob mode), since the rounding
    depends on the batch. In fp32 it
    reuses them: there another batching moves SmolLM2's summed log-probs by rounding only (at most
    2e-4 nats on the sentiment pairs), and the first step's loss is log 2 within 3e-5 rather than
    to the last bit. A run that must start exactly at log 2 passes ``None`` instead."""

    values: torch.Tensor
    mixed_precision: str
    batching: dict | None = None

    def __len__(self) -> int:
        return len(self.values)


def reference_batching(n_pairs: int, config: DPOConfig, num_processes: int = 1) -> dict:
    """How a run's forwards batch the pairs: the first epoch's micro-batches
    (:func:`first_epoch_layout`), padding side, log-prob mode and LM-head chunk. In half precision
    each of them changes how a log-prob rounds."""
    mode = config.logprob_mode
    if config.activation_checkpointing and mode == "auto":  # what the training forwards resolve it to
        mode = "packed"
    return {
        "layout": first_epoch_layout(n_pairs, config, num_processes),
        "padding_side": config.padding_side,
        "mode": mode,
        "chunk_size": config.logits_chunk_size,
    }


def reference_logprobs(reference, pairs, pad_token_id, config: DPOConfig, num_processes: int = 1) -> ReferenceLogprobs:
    """The one place that computes a run's reference log-probs: in the run's precision (resolved for
    the reference's device) and batching (:func:`reference_batching`), so that a policy equal to the
    reference starts at loss log 2 exactly."""
    precision = resolve_mixed_precision(config.mixed_precision, next(reference.parameters()).device)
    batching = reference_batching(len(pairs), config, num_processes)
    values = compute_reference_logprobs(
        reference,
        pairs,
        pad_token_id,
        padding_side=batching["padding_side"],
        mode=batching["mode"],
        chunk_size=batching["chunk_size"],
        mixed_precision=precision,
        layout=batching["layout"],
    )
    return ReferenceLogprobs(values, precision, batching)


def batch_indices(step: int, n_pairs: int, batch_size: int, seed: int) -> list[int]:
    """The pair indices of optimizer step ``step``: a fresh shuffle each epoch, fixed by ``seed``."""
    per_epoch = max(n_pairs // batch_size, 1)
    epoch, position = divmod(step, per_epoch)
    order = list(range(n_pairs))
    random.Random(seed * 100_003 + epoch).shuffle(order)
    start = position * batch_size
    return [order[(start + k) % n_pairs] for k in range(batch_size)]


def _check_trainable_dtypes(model, after_init: bool = False) -> None:
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


def _check_inputs(tokenizer, pairs, config: DPOConfig, output_dir) -> None:
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


class DPOTrainer:
    """Train ``model`` on tokenized preference ``pairs``; see :class:`DPOConfig`.

    ``output_dir`` receives ``checkpoint/`` (for resume) and, at the end, ``final/``
    (``save_pretrained`` output, written to ``final.tmp/`` and renamed: never half-written).
    ``reference_logps`` (:func:`reference_logprobs`) may be given to skip recomputing them; the
    trainer uses them where they fit (see :class:`ReferenceLogprobs`), so runs that differ in seed,
    β or objective can all be given the same ones.
    Trained parameters must be fp32 (load with ``dtype=torch.float32``, the default of
    :func:`~dpo_utils.runtime.models.load_model_and_tokenizer`); a frozen LoRA base may be half precision.
    """

    def __init__(self, model, tokenizer, pairs, config: DPOConfig, output_dir=None, reference_logps=None):
        from accelerate import Accelerator

        _check_trainable_dtypes(model)
        _check_inputs(tokenizer, pairs, config, output_dir)
        self.model_digest = model_fingerprint(
            model
        )  # the starting weights: on resume, the model passed in is again the start
        self.model, self.tokenizer, self.pairs, self.config = model, tokenizer, pairs, config
        self.output_dir = Path(output_dir) if output_dir else None
        self.pad_id = tokenizer.pad_token_id
        self.history: list[dict] = []
        self.step = self.skipped_steps = self.consecutive_skips = 0
        self.saved_step: int | None = None  # the step of the last checkpoint written or loaded
        self.non_finite_forward, self.skip_reason = False, ""
        self.accelerator = Accelerator(
            cpu=not torch.cuda.is_available()
        )  # one process per GPU under `accelerate launch`
        self.device = self.accelerator.device
        self.mixed_precision = resolve_mixed_precision(config.mixed_precision, self.device)
        if config.batch_size % self.accelerator.num_processes:
            raise ValueError(
                f"batch_size={config.batch_size} must be a multiple of the {self.accelerator.num_processes} processes"
            )
        if config.activation_checkpointing:
            from dpo_utils.runtime.models import enable_activation_checkpointing

            enable_activation_checkpointing(model)
        if config.compile:
            model.get_decoder().compile(dynamic=True)
        torch.manual_seed(config.seed)
        model.to(self.device)
        if config.logprob_mode == "shared" and checkpointing_enabled(model):  # switched on outside the config
            raise ValueError(SHARED_UNDER_CHECKPOINTING)
        self.module = self.accelerator.prepare(PolicyLogprobs(model, config.logits_chunk_size))
        self.optimizer = self._adamw([p for p in model.parameters() if p.requires_grad])
        warmup = max(config.warmup_steps, 1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / warmup))
        self.scaler = grad_scaler(self.device, self.mixed_precision)
        self.reference_logps = self._checked_reference(reference_logps)
        if self.reference_logps is not None and not self._fits_batches(self.reference_logps):
            self.reference_logps = None  # computed in this run's own batches by ensure_reference_logps

    def _fits_batches(self, reference_logps: ReferenceLogprobs) -> bool:
        """Whether this run can use ``reference_logps``: only DPO uses a reference, and under half
        precision only log-probs computed in this run's own batching start it at loss log 2."""
        if self.config.objective != "dpo":
            return False
        if self.mixed_precision == "no":
            return True
        return reference_logps.batching == reference_batching(
            len(self.pairs), self.config, self.accelerator.num_processes
        )

    def _checked_reference(self, reference_logps):
        """``reference_logps`` if they match this run's pairs and precision; a clear error otherwise."""
        if reference_logps is None:
            return None
        if not isinstance(reference_logps, ReferenceLogprobs):
            raise TypeError(
                "reference_logps must be a ReferenceLogprobs (from dpo_utils.trainer.reference_logprobs(reference, "
                "pairs, pad_token_id, config)), which records the precision they were computed in; got "
                f"{type(reference_logps).__name__}."
            )
        if reference_logps.mixed_precision != self.mixed_precision:
            raise ValueError(
                f"reference log-probs computed with mixed_precision={reference_logps.mixed_precision!r}, but this "
                f"run computes the policy with {self.mixed_precision!r}: at step 1 the policy would differ from "
                "its own reference by rounding noise. Recompute them with reference_logprobs(reference, pairs, "
                "pad_token_id, config) for this config, or leave reference_logps out."
            )
        if len(reference_logps) != len(self.pairs):
            raise ValueError(f"{len(reference_logps)} reference log-prob rows for {len(self.pairs)} pairs")
        return reference_logps

    def _adamw(self, params) -> torch.optim.AdamW:
        cfg = self.config
        fused = cfg.fused_adamw if cfg.fused_adamw is not None else self.device.type == "cuda"
        return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=fused or None)

    def ensure_reference_logps(self) -> None:
        """Compute reference log-probs once, from the model as it is before any update."""
        if self.config.objective == "dpo" and self.reference_logps is None:
            if self.step:
                raise RuntimeError("reference log-probs must be computed before the first update")
            config = replace(self.config, mixed_precision=self.mixed_precision)
            self.reference_logps = reference_logprobs(
                self.model, self.pairs, self.pad_id, config, self.accelerator.num_processes
            )

    def _pair_loss(self, chunk: list[int], values: dict) -> torch.Tensor:
        """Summed loss of the pairs ``chunk``; their per-pair metrics are appended to ``values``."""
        cfg = self.config
        pairs = [self.pairs[i] for i in chunk]
        mode = resolve_logprob_mode(cfg.logprob_mode, pairs, checkpointing_active(self.model))
        batch = {k: v.to(self.device) for k, v in collate_batch(pairs, self.pad_id, cfg.padding_side, mode).items()}
        with autocast(self.device, self.mixed_precision):
            logps = self.module(batch, mode).float()
        chosen, rejected = logps[: len(chunk)], logps[len(chunk) :]
        counts = batch["completion_mask"].sum(-1)
        ref_chosen = ref_rejected = None
        if cfg.objective == "dpo":
            ref_chosen, ref_rejected = self.reference_logps.values[chunk].to(self.device).unbind(-1)
        with allow_non_finite():  # a NaN or inf here skips the step (apply_update), as a non-finite gradient does
            out = preference_loss(
                cfg.objective,
                chosen,
                rejected,
                counts[: len(chunk)],
                counts[len(chunk) :],
                ref_chosen,
                ref_rejected,
                cfg.beta,
                cfg.loss_type,
                cfg.label_smoothing,
                cfg.nll_weight,
                cfg.simpo_gamma,
            )
        finite = torch.isfinite(logps.detach()).all() & torch.isfinite(out.losses.detach()).all()
        values.setdefault(NON_FINITE_KEY, []).append((~finite).float().reshape(1))
        step_values = {"loss": out.losses, "logps/chosen": chosen, "logps/rejected": rejected}
        if cfg.objective != "sft":
            step_values |= {
                "rewards/chosen": out.chosen_rewards,
                "rewards/rejected": out.rejected_rewards,
                "rewards/accuracies": (out.margins > 0).float(),
                "rewards/margins": out.margins,
            }
        step_values |= {"length/chosen": counts[: len(chunk)], "length/rejected": counts[len(chunk) :]}
        for key, value in step_values.items():
            values.setdefault(key, []).append(value.detach().float())
        return out.losses.sum()

    def accumulate_gradients(self, indices: list[int]) -> dict[str, float]:
        """Backward of the mean loss over the pairs ``indices`` (this process's share of them),
        micro-batch by micro-batch; returns the metrics averaged over all processes' pairs."""
        _check_trainable_dtypes(self.model, after_init=True)
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        mine = indices[rank::world]
        micro = self.config.micro_batch_size or len(mine)
        values: dict[str, list] = {}
        starts = list(range(0, len(mine), micro))
        for start in starts:
            sync = start == starts[-1]  # gradients are all-reduced once, after the last micro-batch
            with nullcontext() if sync else self.accelerator.no_sync(self.module):
                loss = self._pair_loss(mine[start : start + micro], values) * world / len(indices)
                self.scaler.scale(loss).backward()
        metrics = {key: self.accelerator.gather(torch.cat(parts)).mean().item() for key, parts in values.items()}
        self.non_finite_forward = metrics.pop(NON_FINITE_KEY) > 0  # on any process: all of them skip the step
        return metrics

    def apply_update(self) -> tuple[float, bool]:
        """Unscale, clip and apply the accumulated gradients, unless they, or the forward pass's
        log-probs and losses (:meth:`accumulate_gradients`), are not finite.

        Returns ``(grad_norm, skipped)``. A skipped step leaves weights and AdamW state untouched
        (and, in fp16, halves the loss scale when the gradients overflowed)."""
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm).item()
        forward, self.non_finite_forward = self.non_finite_forward, False
        skipped = forward or not math.isfinite(grad_norm)
        if skipped:
            self.skip_reason = (
                "non-finite log-probs or loss in the forward pass" if forward else "non-finite gradients"
            )
        if not skipped:
            self.scaler.step(self.optimizer)
            self.scheduler.step()
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm, skipped

    def train_step(self) -> dict:
        """One optimizer step over ``batch_size`` pairs (accumulated over micro-batches)."""
        cfg = self.config
        self.ensure_reference_logps()
        self.model.train()
        lr = self.scheduler.get_last_lr()[0]
        metrics = self.accumulate_gradients(batch_indices(self.step, len(self.pairs), cfg.batch_size, cfg.seed))
        grad_norm, skipped = self.apply_update()
        self.step += 1
        self.skipped_steps += skipped
        self.consecutive_skips = self.consecutive_skips + 1 if skipped else 0
        row = {"step": self.step, "lr": lr, **metrics, "grad_norm": grad_norm, "skipped": int(skipped)}
        self.history.append(row)
        if self.consecutive_skips >= cfg.max_consecutive_skips:
            self._stop_on_non_finite(row)
        return row

    def _stop_on_non_finite(self, row: dict) -> None:
        saved = self._save_before_stopping()
        cfg = self.config
        others = {
            "fp16": "mixed_precision='bf16' (where the GPU has it) or 'no' instead of 'fp16', ",
            "bf16": "mixed_precision='no' instead of 'bf16', ",
        }.get(self.mixed_precision, "")
        raise NonFiniteTrainingError(
            f"{self.consecutive_skips} steps in a row were skipped, none applied: {self.skip_reason} (last loss "
            f"{row['loss']}). Empty completions are refused when the data are prepared, so this is a numerical fault."
            f"{saved} Try: {others}a lower learning_rate (now {cfg.learning_rate}) or a smaller max_grad_norm "
            f"(now {cfg.max_grad_norm})."
        )

    def _non_finite_weights(self) -> list[str]:
        return [name for name, p in self.model.named_parameters() if not torch.isfinite(p).all()]

    def _save_before_stopping(self) -> str:
        """Checkpoint the weights unless an applied step made them non-finite; say which it was."""
        broken = self._non_finite_weights()
        if broken:
            folder = self.output_dir / CHECKPOINT_DIR if self.output_dir else None
            kept = f"; {folder} keeps step {self.saved_step}" if self.saved_step else ""
            return (
                f" The weights are no longer finite ({broken[0]}, {len(broken)} tensors in all): an applied step "
                f"broke them, so no checkpoint was written{kept}."
            )
        if not self.output_dir:
            return ""
        self.save_checkpoint()  # a skipped step changes no weight
        return f" {self.output_dir / CHECKPOINT_DIR} holds the weights from before these skipped steps."

    def train(self, resume: bool = True, until: int | None = None) -> list[dict]:
        """Train up to step ``until`` (default ``max_steps``) and return the history; with ``output_dir``, the
        state at ``until`` is checkpointed, and at ``max_steps`` the final model is saved too.

        A new trainer resumes from ``output_dir/checkpoint`` when it is this run's (and refuses another
        run's); a trainer called again continues where it stopped, so ``train(until=10)`` then
        ``train(until=20)`` is the run ``train(until=20)`` makes. A finished run is loaded, not trained again.

        Ctrl-C (``KeyboardInterrupt``) prints "stopped at step N; run again to resume from the checkpoint of
        step M" and raises :class:`TrainingInterrupted`, a ``KeyboardInterrupt`` with that message: a script
        exits as on any Ctrl-C, a Jupyter cell stops, and no ``except Exception`` swallows it. Calling
        ``train()`` again (on this trainer, or on a new one from the same starting model) resumes from the
        checkpoint.
        """
        until = self.config.max_steps if until is None else until
        if not 0 <= until <= self.config.max_steps:
            raise ValueError(f"until={until} must be a step from 0 to max_steps={self.config.max_steps}")
        try:
            if resume and self.output_dir and self.step != self.saved_step and state_path(self.output_dir).exists():
                self.load_checkpoint()  # a new trainer, or one stopped between checkpoints
            trained = self._run_steps(until)
            if self.output_dir:
                self._save_at(until, trained)
        except KeyboardInterrupt:
            self.optimizer.zero_grad(set_to_none=True)  # a half-accumulated step must not leak into the next one
            message = self._interrupt_message()
            if self.accelerator.is_main_process:
                print(message)
            raise TrainingInterrupted(message) from None
        self.accelerator.wait_for_everyone()  # every process returns once the main one has written
        return self.history

    def _save_at(self, until: int, trained: bool) -> None:
        """Checkpoint the state at ``until`` (a finished run without Adam's moments, 2x the weights) and, at the
        end, write ``final/``; a run loaded as it was writes nothing again (but a ``final/`` it lacks)."""
        finished = until == self.config.max_steps
        if trained or self.saved_step != self.step:
            self.save_checkpoint(keep_optimizer=not finished)
        final_missing = not (self.output_dir / FINAL_DIR).exists()
        if (
            finished
            and self.config.save_final_model
            and self.accelerator.is_main_process
            and (trained or final_missing)
        ):
            save_final(self.model, self.tokenizer, self.output_dir, self.step)

    def _run_steps(self, until: int) -> bool:
        """The training steps from ``self.step`` to ``until``, with a progress bar and periodic checkpoints;
        whether any step ran."""
        self.ensure_reference_logps()  # its own bar, before the training bar
        if self.step >= until:
            return False
        bar = progress_bar(
            total=until,
            initial=self.step,
            desc=f"{self.config.objective} training",
            disable=not self.accelerator.is_main_process,
        )
        while self.step < until:
            row = self.train_step()
            bar.update(1)
            bar.set_postfix(
                loss=f"{row['loss']:.4f}",
                **({"skipped": self.skipped_steps} if self.skipped_steps else {}),
                refresh=False,
            )
            if self.output_dir and self.config.save_every and self.step % self.config.save_every == 0:
                self.save_checkpoint()
        bar.close()
        return True

    def _interrupt_message(self) -> str:
        """What a Ctrl-C leaves: the step reached, and where a new ``train()`` starts from."""
        stopped = f"stopped at step {self.step} of {self.config.max_steps}"
        folder = self.output_dir / CHECKPOINT_DIR if self.output_dir else None
        if folder is None:
            return f"{stopped}; no output_dir, so no checkpoint was written and a new run starts over"
        if self.saved_step is None:
            return f"{stopped}; no checkpoint was written yet to {folder}, so a new run starts over"
        return f"{stopped}; run again to resume from the checkpoint of step {self.saved_step} in {folder}"

    def save_checkpoint(self, keep_optimizer: bool = True) -> bool:
        """Write everything needed to resume into ``output_dir/checkpoint``, atomically (a crash or a full
        disk mid-save keeps the old one: :func:`~dpo_utils.checkpoints.write_state`). Weights that are no
        longer finite are never written: the method returns ``False`` and the old checkpoint stays.

        The state holds tensors and plain Python values only (numbers, strings, lists, dicts), so that
        :meth:`load_checkpoint` reads it with ``torch.load(weights_only=True)``. A finished run drops the
        optimizer state; extending it later (a larger ``max_steps``) restarts AdamW's moment estimates from zero.
        """
        if self._non_finite_weights():  # broken weights never replace a good checkpoint
            return False
        self.accelerator.wait_for_everyone()
        mark_saved = lambda: setattr(self, "saved_step", self.step)
        if self.accelerator.is_main_process:
            state = self._checkpoint_state(keep_optimizer)
            write_state(self.output_dir / CHECKPOINT_DIR, state, self.history, on_state_written=mark_saved)
        mark_saved()
        return True

    def _checkpoint_state(self, keep_optimizer: bool) -> dict:
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if keep_optimizer else None,
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": self.history,
            "skipped_steps": self.skipped_steps,
            "reference_logps": None if self.reference_logps is None else vars(self.reference_logps),
            "config": asdict(self.config),
            "fingerprint": run_fingerprint(self.config, self.pairs, self.model_digest),
            "model_fingerprint": self.model_digest,
            "model_fingerprint_version": MODEL_FINGERPRINT_VERSION,
        }

    def load_checkpoint(self) -> None:
        """Resume from ``output_dir/checkpoint``, after checking that it is a checkpoint of this run
        (:func:`~dpo_utils.checkpoints.check_run`).

        Only tensors and plain values are unpickled (:func:`~dpo_utils.checkpoints.load_state`). ``state.pt``
        holds the history too: a ``history.json`` left behind by a save interrupted between its two renames is
        rewritten from it, and stray ``.tmp`` files are removed.
        """
        path = state_path(self.output_dir)
        # accelerate's CPU device under torchrun is "cpu:0", which torch.load cannot restore to
        state = load_state(path, "cpu" if self.device.type == "cpu" else self.device)
        check_run(state, path, self.config, self.pairs, self.model_digest)
        self.model.load_state_dict(state["model"])
        if state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        elif state["step"] < self.config.max_steps:
            print("the checkpoint is of a finished run, without optimizer state: AdamW's moments restart from zero")
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.history = state["step"], state["history"]
        self.reference_logps = self._reference_from_checkpoint(state["reference_logps"], path)
        self.skipped_steps, self.saved_step = state["skipped_steps"], state["step"]
        if self.accelerator.is_main_process:
            repair_folder(path.parent, self.history)
            print(f"resumed from {path.parent} at step {self.step}")

    def _reference_from_checkpoint(self, saved, path: Path):
        if saved is None:
            return None
        if not isinstance(saved, dict):
            raise StaleCheckpointError(
                f"{path} was written by an older dpo_utils (reference log-probs without their "
                f"precision). Start fresh with trainer.train(resume=False) or delete {path.parent}."
            )
        try:
            return self._checked_reference(ReferenceLogprobs(**saved))
        except ValueError as error:
            raise StaleCheckpointError(f"{path}: {error}") from None
