"""Train the tiny test model a few steps and save its weights: run by tests/test_distributed.py in one
process and under ``torchrun --nproc_per_node 2`` (two CPU processes, gloo)."""

import sys

import torch

from dpo_utils.trainer import DPOConfig, DPOTrainer
from tests.helpers import TinyTokenizer, make_pairs, tiny_llama


def main(output: str) -> None:
    model = tiny_llama()
    config = DPOConfig(beta=0.5, learning_rate=1e-2, batch_size=8, micro_batch_size=2, max_steps=3, warmup_steps=2)
    trainer = DPOTrainer(model, TinyTokenizer(), make_pairs(n=16), config)
    history = trainer.train()
    if trainer.accelerator.is_main_process:
        torch.save({"weights": model.state_dict(), "history": history, "processes": trainer.accelerator.num_processes}, output)


if __name__ == "__main__":
    main(sys.argv[1])
