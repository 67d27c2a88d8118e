"""A small, readable DPO training loop (and Preferred-FT, its SFT baseline).

Design choices, each for speed, memory or correctness:

- reference log-probs are computed **once** before training (:mod:`dpo_utils.reference`);
- chosen and rejected go through the model in **one** forward pass, each prompt computed once
  (shared, or packed without padding: :mod:`dpo_utils.logprob_modes`), the LM head on completion
  positions only;
- **mixed precision**: trained weights and AdamW state stay fp32; the compute runs under autocast
  in bf16 or fp16 (with a loss scaler), see :mod:`dpo_utils.runtime.precision`;
- a step whose log-probs, loss or gradients are not finite is **skipped**, never applied, and counted;
- gradient accumulation over micro-batches, clipping, linear warmup, AdamW; several processes
  under ``accelerate launch`` or ``torchrun`` (each takes its share of every batch);
- checkpoints (:mod:`dpo_utils.checkpoints`) resume exactly, and only the run that wrote them.

Logged metrics use TRL's names: ``loss``, ``rewards/chosen``, ``rewards/rejected``,
``rewards/accuracies``, ``rewards/margins``, ``logps/chosen``, ``logps/rejected``. Settings and
inputs that cannot train are refused when the config and trainer are built (:mod:`dpo_utils.training_checks`).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from accelerate import Accelerator

from dpo_utils.checkpoints import (
    CHECKPOINT_DIR,
    load_checkpoint,
    model_fingerprint,
    resume_hint,
    save_checkpoint,
    save_reached,
    state_path,
)
from dpo_utils.data import batch_indices
from dpo_utils.logprob_modes import (
    LogprobMode,
    PolicyLogprobs,
    collate_batch,
    mode_before_batching,
    resolve_logprob_mode,
)
from dpo_utils.logprobs import checkpointing_active, checkpointing_enabled
from dpo_utils.losses import LOSS_SETTINGS, allow_non_finite, preference_loss
from dpo_utils.numerics import non_finite_weights
from dpo_utils.reference import checked_reference, reference_logprobs, usable_for_run
from dpo_utils.runtime.models import enable_activation_checkpointing
from dpo_utils.runtime.precision import autocast, grad_scaler, resolve_mixed_precision
from dpo_utils.runtime.progress import progress_bar
from dpo_utils.training_checks import check_inputs, check_settings, check_trainable_dtypes


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
        check_settings(self)  # a clear TypeError or ValueError naming the setting (dpo_utils.training_checks)


NON_FINITE_KEY = "_non_finite"  # per-micro-batch flag gathered with the metrics, not logged


class NonFiniteTrainingError(RuntimeError):
    """Too many optimizer steps in a row had inf or NaN gradients."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped :meth:`DPOTrainer.train`; the message says the step reached and the checkpoint to resume from."""


class DPOTrainer:
    """Train ``model`` on tokenized preference ``pairs``; see :class:`DPOConfig`.

    ``output_dir`` receives ``checkpoint/`` (for resume) and, at the end, ``final/``
    (:mod:`dpo_utils.checkpoints`). ``reference_logps`` (:func:`~dpo_utils.reference.reference_logprobs`)
    may be given to skip recomputing them; the trainer uses them where they fit
    (:func:`~dpo_utils.reference.usable_for_run`), so runs that differ in seed, β or objective can all
    be given the same ones. Trained parameters must be fp32 (load with ``dtype=torch.float32``, the
    default of :func:`~dpo_utils.runtime.models.load_model_and_tokenizer`); a frozen LoRA base may be
    half precision.
    """

    def __init__(self, model, tokenizer, pairs, config: DPOConfig, output_dir=None, reference_logps=None):
        check_trainable_dtypes(model)
        check_inputs(tokenizer, pairs, config, output_dir)
        self.model_digest = model_fingerprint(model)  # the starting weights: on resume, again the model passed in
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
        processes = self.accelerator.num_processes
        if config.batch_size % processes:
            raise ValueError(f"batch_size={config.batch_size} must be a multiple of the {processes} processes")
        if config.activation_checkpointing:
            enable_activation_checkpointing(model)
        if config.compile:
            model.get_decoder().compile(dynamic=True)
        torch.manual_seed(config.seed)
        model.to(self.device)
        mode_before_batching(config.logprob_mode, checkpointing_enabled(model))  # refuses "shared" under it
        self.module = self.accelerator.prepare(PolicyLogprobs(model, config.logits_chunk_size))
        self.optimizer = self._adamw([p for p in model.parameters() if p.requires_grad])
        warmup = max(config.warmup_steps, 1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / warmup))
        self.scaler = grad_scaler(self.device, self.mixed_precision)
        self.reference_logps = checked_reference(reference_logps, len(pairs), self.mixed_precision)
        if self.reference_logps is not None and not usable_for_run(
            self.reference_logps, len(pairs), config, self.mixed_precision, processes
        ):
            self.reference_logps = None  # computed in this run's own batches by ensure_reference_logps

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
                ref_chosen_logps=ref_chosen,
                ref_rejected_logps=ref_rejected,
                **{name: getattr(cfg, name) for name in LOSS_SETTINGS},
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
        check_trainable_dtypes(self.model, after_init=True)
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
        """Checkpoint the weights unless an applied step broke them (say which), then stop with advice."""
        cfg, broken = self.config, non_finite_weights(self.model)
        folder = self.output_dir / CHECKPOINT_DIR if self.output_dir else None
        if broken:
            kept = f"; {folder} keeps step {self.saved_step}" if self.saved_step else ""
            saved = (
                f" The weights are no longer finite ({broken[0]}, {len(broken)} tensors in all): an applied step "
                f"broke them, so no checkpoint was written{kept}."
            )
        else:
            saved = f" {folder} holds the weights from before these skipped steps." if folder else ""
            if folder:
                self.save_checkpoint()  # a skipped step changes no weight
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

    def train(self, resume: bool = True, until: int | None = None) -> list[dict]:
        """Train up to step ``until`` (default ``max_steps``) and return the history; with ``output_dir``, the
        state at ``until`` is checkpointed, and at ``max_steps`` the final model is saved too.

        A new trainer resumes from ``output_dir/checkpoint`` if it is this run's (and refuses another run's);
        ``train(until=10)`` then ``train(until=20)`` is the run ``train(until=20)`` makes; a finished run is
        loaded, not trained again. Ctrl-C prints where a new ``train()`` resumes from and raises
        :class:`TrainingInterrupted`, a ``KeyboardInterrupt`` with that message, which no ``except Exception``
        swallows.
        """
        until = self.config.max_steps if until is None else until
        if not 0 <= until <= self.config.max_steps:
            raise ValueError(f"until={until} must be a step from 0 to max_steps={self.config.max_steps}")
        try:
            if resume and self.output_dir and self.step != self.saved_step and state_path(self.output_dir).exists():
                self.load_checkpoint()  # a new trainer, or one stopped between checkpoints
            trained = self._run_steps(until)
            if self.output_dir:
                save_reached(self, until, trained)
        except KeyboardInterrupt:
            self.optimizer.zero_grad(set_to_none=True)  # a half-accumulated step must not leak into the next one
            message = resume_hint(self)
            if self.accelerator.is_main_process:
                print(message)
            raise TrainingInterrupted(message) from None
        self.accelerator.wait_for_everyone()  # every process returns once the main one has written
        return self.history

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

    def save_checkpoint(self, keep_optimizer: bool = True) -> bool:
        """Checkpoint this run (:func:`dpo_utils.checkpoints.save_checkpoint`); ``False`` when the weights are
        not finite, which are never written."""
        return save_checkpoint(self, keep_optimizer)

    def load_checkpoint(self) -> None:
        """Resume from ``output_dir/checkpoint``: :func:`dpo_utils.checkpoints.load_checkpoint`."""
        load_checkpoint(self)
