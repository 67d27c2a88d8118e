"""Measure one DPO training step's peak memory on CPU (run in a fresh process by tests/test_memory.py).

Prints JSON: the measured peak (RSS increase over the step plus the weights already loaded) and the
estimate of dpo_utils.runtime.memory for the same shapes. The peak is the kernel's high-water mark, reset
just before the measured step: a lifetime maximum would also count pages that were resident
earlier (the model's construction, the first step, library code the kernel has since reclaimed)."""

import json
import sys
from pathlib import Path

import psutil
import torch

from dpo_utils.data import TokenizedPair
from dpo_utils.runtime.memory import step_tokens, training_memory
from dpo_utils.trainer import DPOConfig, DPOTrainer
from tests.helpers import TinyTokenizer, tiny_llama

PAIRS, PROMPT, COMPLETION = 8, 96, 96


def high_water_mark() -> int:
    """Peak resident set since the last reset, in bytes (VmHWM in /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmHWM line")


def main(mode: str) -> None:
    sizes = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=6, num_key_value_heads=4)
    model = tiny_llama(0, 16384, **sizes, max_position_embeddings=2048)
    config = model.config
    ids = lambda start, k: [(start + j) % 16000 + 3 for j in range(k)]
    pairs = [
        TokenizedPair(ids(7 * n, PROMPT), ids(11 * n, COMPLETION - 1) + [2], ids(13 * n, COMPLETION - 1) + [2])
        for n in range(PAIRS)
    ]
    trainer = DPOTrainer(
        model,
        TinyTokenizer(),
        pairs,
        DPOConfig(batch_size=PAIRS, logprob_mode=mode, mixed_precision="no"),
    )
    trainer.train_step()  # AdamW state exists from here on
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    adam = sum(
        t.numel() * t.element_size()
        for s in trainer.optimizer.state.values()
        for t in s.values()
        if torch.is_tensor(t)
    )
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    before = psutil.Process().memory_info().rss
    trainer.train_step()
    peak = high_water_mark()
    tokens, completion = step_tokens(PAIRS, PROMPT, COMPLETION, mode)
    estimate = training_memory(config, tokens, completion, mixed_precision="no", logprob_mode=mode)
    print(json.dumps({"measured": peak - before + weights + adam, "estimate": estimate}))


if __name__ == "__main__":
    main(sys.argv[1])
