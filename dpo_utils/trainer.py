"""A small, readable DPO training loop (and Preferred-FT, its SFT baseline).

Design choices, each for speed or memory:

- reference log-probs are computed **once** before training (the reference model need not stay
  in memory, and no reference forward runs per step);
- chosen and rejected go through the model in **one** forward pass, and by default each prompt
  is computed once and shared by both completions (prefix sharing);
- the LM head runs on completion positions only, in chunks (no ``batch x seq x vocab`` tensor);
- gradient accumulation over micro-batches, clipping, linear warmup, AdamW.

Logged metrics use TRL's names: ``loss``, ``rewards/chosen``, ``rewards/rejected``,
``rewards/accuracies``, ``rewards/margins``, ``logps/chosen``, ``logps/rejected``.
Checkpoints hold model, optimizer, scheduler, step and history, so an interrupted run resumes
and ends exactly where an uninterrupted one would.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from dpo_utils.data import TokenizedPair, collate_pairs, collate_shared_prompt
from dpo_utils.logprobs import completion_logprobs_lean, model_sequence_logprobs, shared_prompt_logprobs
from dpo_utils.losses import OBJECTIVES, preference_loss


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
    share_prompt: bool = True  # prompt computed once for chosen and rejected (prefix sharing)
    lean_logits: bool = True  # LM head only on completion positions, chunked (same numbers, less memory)
    logits_chunk_size: int = 256  # completion positions per LM-head chunk
    fused_adamw: bool | None = None  # None: the fused AdamW kernel on GPU, PyTorch's default elsewhere
    compile: bool = False  # torch.compile the decoder (for GPUs: pays off over many steps)

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective={self.objective!r}: choose one of {OBJECTIVES}")
        if self.nll_weight and self.objective != "dpo":
            raise ValueError("nll_weight adds an NLL term to DPO; use it with objective='dpo'")

    @property
    def logprob_mode(self) -> str:
        return "shared" if self.share_prompt else "lean" if self.lean_logits else "full"


class Metrics:
    """Averages per-pair metrics over one optimizer step's micro-batches."""

    def __init__(self):
        self.sums, self.count = {}, 0

    def add(self, values: dict[str, torch.Tensor]) -> None:
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value.detach().float().sum().item()
        self.count += len(next(iter(values.values())))

    def means(self) -> dict[str, float]:
        return {key: total / self.count for key, total in self.sums.items()}


def batch_logprobs(model, pairs: list[TokenizedPair], pad_token_id: int, padding_side: str = "right",
                   mode: str = "full", chunk_size: int = 256):
    """Chosen and rejected sequence log-probs of ``pairs``, chosen and rejected in one pass.

    ``mode``: ``"full"`` (logits everywhere, :func:`~dpo_utils.logprobs.model_sequence_logprobs`),
    ``"lean"`` (LM head on completion tokens only) or ``"shared"`` (lean, and each prompt computed
    once for both completions). All three give the same values and gradients.
    Returns ``(chosen, rejected, token_counts)``; ``token_counts`` has the completion lengths
    of all ``2B`` sequences, chosen first.
    """
    device = next(model.parameters()).device
    if mode == "shared":
        batch = {k: v.to(device) for k, v in collate_shared_prompt(pairs, pad_token_id).items()}
        logps = shared_prompt_logprobs(model, *batch.values(), chunk_size=chunk_size)
        counts = batch["completion_mask"].sum(-1)
    else:
        batch = collate_pairs(pairs, pad_token_id, padding_side)
        tensors = [batch[k].to(device) for k in ("input_ids", "attention_mask", "completion_mask")]
        logps = completion_logprobs_lean(model, *tensors, chunk_size=chunk_size) if mode == "lean" else model_sequence_logprobs(model, *tensors)
        counts = tensors[2].sum(-1)
    return logps[: len(pairs)], logps[len(pairs):], counts


@torch.no_grad()
def compute_reference_logprobs(model, pairs, pad_token_id, batch_size=8, padding_side="right", mode="shared",
                               chunk_size=256) -> torch.Tensor:
    """``(n_pairs, 2)`` log-probs of chosen and rejected under the (frozen) reference model."""
    was_training = model.training
    model.eval()
    out = []
    for start in tqdm(range(0, len(pairs), batch_size), desc="reference log-probs", leave=False):
        chosen, rejected, _ = batch_logprobs(model, pairs[start:start + batch_size], pad_token_id, padding_side, mode, chunk_size)
        out.append(torch.stack([chosen, rejected], dim=-1).float().cpu())
    model.train(was_training)
    return torch.cat(out)


def batch_indices(step: int, n_pairs: int, batch_size: int, seed: int) -> list[int]:
    """The pair indices of optimizer step ``step``: a fresh shuffle each epoch, fixed by ``seed``."""
    per_epoch = max(n_pairs // batch_size, 1)
    epoch, position = divmod(step, per_epoch)
    order = list(range(n_pairs))
    random.Random(seed * 100_003 + epoch).shuffle(order)
    start = position * batch_size
    return [order[(start + k) % n_pairs] for k in range(batch_size)]


class DPOTrainer:
    """Train ``model`` on tokenized preference ``pairs``; see :class:`DPOConfig`.

    ``output_dir`` receives ``checkpoint/`` (for resume) and, at the end, ``final/``
    (``save_pretrained`` output). ``reference_logps`` may be given to skip recomputing them.
    """

    def __init__(self, model, tokenizer, pairs, config: DPOConfig, output_dir=None, reference_logps=None):
        self.model, self.tokenizer, self.pairs, self.config = model, tokenizer, pairs, config
        self.output_dir = Path(output_dir) if output_dir else None
        self.pad_id = tokenizer.pad_token_id
        self.history: list[dict] = []
        self.step = 0
        torch.manual_seed(config.seed)
        params = [p for p in model.parameters() if p.requires_grad]
        fused = config.fused_adamw if config.fused_adamw is not None else bool(params) and params[0].is_cuda
        self.optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay, fused=fused or None)
        if config.compile:
            model.get_decoder().compile(dynamic=True)
        warmup = max(config.warmup_steps, 1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / warmup))
        self.reference_logps = reference_logps

    def ensure_reference_logps(self) -> None:
        """Compute reference log-probs once, from the model as it is before any update."""
        if self.config.objective == "dpo" and self.reference_logps is None:
            if self.step:
                raise RuntimeError("reference log-probs must be computed before the first update")
            cfg = self.config
            self.reference_logps = compute_reference_logprobs(
                self.model, self.pairs, self.pad_id, cfg.micro_batch_size or cfg.batch_size, cfg.padding_side, cfg.logprob_mode,
                cfg.logits_chunk_size)

    def _pair_loss(self, chunk: list[int], metrics: Metrics) -> torch.Tensor:
        cfg = self.config
        chosen, rejected, counts = batch_logprobs(
            self.model, [self.pairs[i] for i in chunk], self.pad_id, cfg.padding_side, cfg.logprob_mode, cfg.logits_chunk_size)
        counts = counts.to(chosen.device)
        ref_chosen = ref_rejected = None
        if cfg.objective == "dpo":
            ref_chosen, ref_rejected = self.reference_logps[chunk].to(chosen.device).unbind(-1)
        out = preference_loss(cfg.objective, chosen, rejected, counts[: len(chunk)], counts[len(chunk):], ref_chosen, ref_rejected,
                              cfg.beta, cfg.loss_type, cfg.label_smoothing, cfg.nll_weight, cfg.simpo_gamma)
        values = {"loss": out.losses, "logps/chosen": chosen, "logps/rejected": rejected}
        if cfg.objective != "sft":
            values |= {"rewards/chosen": out.chosen_rewards, "rewards/rejected": out.rejected_rewards,
                       "rewards/accuracies": (out.margins > 0).float(), "rewards/margins": out.margins}
        metrics.add(values | {"length/chosen": counts[: len(chunk)], "length/rejected": counts[len(chunk):]})
        return out.losses.sum()

    def train_step(self) -> dict:
        """One optimizer step over ``batch_size`` pairs (accumulated over micro-batches)."""
        cfg = self.config
        self.ensure_reference_logps()
        self.model.train()
        indices = batch_indices(self.step, len(self.pairs), cfg.batch_size, cfg.seed)
        micro = cfg.micro_batch_size or cfg.batch_size
        metrics = Metrics()
        for start in range(0, len(indices), micro):
            (self._pair_loss(indices[start:start + micro], metrics) / len(indices)).backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        row = {"step": self.step + 1, "lr": self.scheduler.get_last_lr()[0], **metrics.means(), "grad_norm": grad_norm.item()}
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.history.append(row)
        return row

    def train(self, resume: bool = True) -> list[dict]:
        """Run until ``max_steps``, resuming from ``output_dir/checkpoint`` when present."""
        if resume and self.output_dir and (self.output_dir / "checkpoint" / "state.pt").exists():
            self.load_checkpoint()
        bar = tqdm(total=self.config.max_steps, initial=self.step, desc=f"{self.config.objective} training")
        while self.step < self.config.max_steps:
            row = self.train_step()
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            if self.output_dir and self.config.save_every and self.step % self.config.save_every == 0:
                self.save_checkpoint()
        bar.close()
        if self.output_dir:
            self.save_checkpoint(keep_optimizer=False)  # finished: Adam's moments (2x the weights) are not needed
            if self.config.save_final_model:
                self.model.save_pretrained(self.output_dir / "final")
                self.tokenizer.save_pretrained(self.output_dir / "final")
        return self.history

    def save_checkpoint(self, keep_optimizer: bool = True) -> None:
        """Write everything needed to resume, atomically (a crash mid-save keeps the old one).

        A finished run drops the optimizer state; extending it later (a larger ``max_steps``)
        restarts AdamW's moment estimates from zero.
        """
        folder = self.output_dir / "checkpoint"
        folder.mkdir(parents=True, exist_ok=True)
        state = {"step": self.step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict() if keep_optimizer else None,
                 "scheduler": self.scheduler.state_dict(), "history": self.history,
                 "reference_logps": self.reference_logps, "config": asdict(self.config)}
        torch.save(state, folder / "state.pt.tmp")
        (folder / "state.pt.tmp").replace(folder / "state.pt")
        (folder / "history.json").write_text(json.dumps(self.history))

    def load_checkpoint(self) -> None:
        state = torch.load(self.output_dir / "checkpoint" / "state.pt", weights_only=False)
        self.model.load_state_dict(state["model"])
        if state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        elif state["step"] < self.config.max_steps:
            print("the checkpoint is of a finished run, without optimizer state: AdamW's moments restart from zero")
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.history, self.reference_logps = state["step"], state["history"], state["reference_logps"]
        print(f"resumed from {self.output_dir / 'checkpoint'} at step {self.step}")
