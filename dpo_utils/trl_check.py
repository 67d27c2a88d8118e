"""TRL's DPO loss on the same rows, to check that ``dpo_utils`` computes the same thing."""

from __future__ import annotations

import tempfile

import torch

from dpo_utils.data import TokenizedPair
from dpo_utils.runtime.models import quiet_checkpointing_renames


def trl_dpo_loss(
    policy,
    reference,
    tokenizer,
    rows: list[dict],
    beta: float,
    max_length: int | None = None,
    loss_type: str = "sigmoid",
) -> float:
    """The loss TRL's ``DPOTrainer.compute_loss`` gives on ``rows`` (one batch, no training), mean over pairs.

    Pass the ``reference`` model explicitly. Given a LoRA model whose adapter is already trained
    and no ``ref_model``, TRL assumes you continue training that adapter and copies it as the
    reference, so policy and reference coincide and the loss is exactly log 2.
    """
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    device = next(policy.parameters()).device
    with tempfile.TemporaryDirectory() as out, quiet_checkpointing_renames():  # TRL uses the old names
        args = DPOConfig(
            output_dir=out,
            beta=beta,
            loss_type=loss_type,
            max_length=max_length,
            per_device_train_batch_size=len(rows),
            report_to="none",
            save_strategy="no",
            use_cpu=device.type == "cpu",
            bf16=next(policy.parameters()).dtype == torch.bfloat16,
        )
        trainer = DPOTrainer(
            model=policy,
            ref_model=reference,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        )
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
        with torch.no_grad():
            return trainer.compute_loss(trainer.model, {k: v.to(device) for k, v in batch.items()}).item()


def trl_tokenized_pairs(tokenizer, rows: list[dict]) -> list:
    """``rows`` as TRL's ``DPOTrainer`` tokenizes them (its own ``_prepare_dataset``, no truncation),
    as :class:`~dpo_utils.data.TokenizedPair` objects to compare with ours."""
    import types

    from datasets import Dataset
    from trl import DPOTrainer

    args = types.SimpleNamespace(dataset_num_proc=None, max_length=None, truncation_mode="keep_start")
    trainer = types.SimpleNamespace(_tokenizer=tokenizer)  # all `_prepare_dataset` reads from the trainer
    dataset = DPOTrainer._prepare_dataset(trainer, Dataset.from_list(rows), tokenizer, args, "train")
    return [TokenizedPair(row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]) for row in dataset]
