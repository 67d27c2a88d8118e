"""Train the tiny test model a few steps and save its weights: run by tests/test_distributed.py in one
process and under ``torchrun --nproc_per_node 2`` (two CPU processes, gloo).

``--output-dir`` keeps checkpoints (every step), so a later run resumes; ``--kill-at K`` SIGKILLs every
process when it is about to start step K + 1, as a crash or a cluster's pre-emption would."""

import argparse
import os
import signal
from pathlib import Path

import torch

from dpo_utils.trainer import DPOConfig, DPOTrainer
from tests.helpers import TinyTokenizer, make_pairs, tiny_llama


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--output-dir")
    parser.add_argument("--kill-at", type=int)
    args = parser.parse_args()
    model = tiny_llama()
    config = DPOConfig(
        beta=0.5,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        micro_batch_size=2,
        max_steps=args.steps,
        warmup_steps=2,
        save_every=1 if args.output_dir else None,
        save_final_model=False,
    )
    trainer = DPOTrainer(model, TinyTokenizer(), make_pairs(n=16), config, output_dir=args.output_dir)
    if args.kill_at is not None:
        step = trainer.train_step
        trainer.train_step = lambda: os.kill(os.getpid(), signal.SIGKILL) if trainer.step == args.kill_at else step()
    resumed_at, load = [], trainer.load_checkpoint
    trainer.load_checkpoint = lambda: (load(), resumed_at.append(trainer.step))
    history = trainer.train()
    if args.output_dir:  # train() returns on every process only after the main one wrote the last checkpoint
        final = torch.load(Path(args.output_dir) / "checkpoint" / "state.pt", weights_only=True)
        assert final["step"] == args.steps and final["optimizer"] is None, final["step"]
    if trainer.accelerator.is_main_process:
        torch.save(
            {
                "weights": model.state_dict(),
                "history": history,
                "processes": trainer.accelerator.num_processes,
                "resumed_at": resumed_at[0] if resumed_at else None,
            },
            args.output,
        )
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()  # close the process group before the interpreter tears it down


if __name__ == "__main__":
    main()
