"""The documented ``train.py`` for ``accelerate launch``, run as written: two CPU processes under torchrun.

The script loads "Qwen/Qwen2.5-1.5B-Instruct". Two environment variables make that tiny without
touching the script: ``HF_HUB_OFFLINE=1`` sends ``load_model_and_tokenizer`` to the offline
fallback, and ``DPO_TUTORIAL_CACHE`` points the fallback at a folder holding a tiny random Llama
with a 512-token tokenizer in SmolLM2's chat format. Everything else (the shipped pairs, batch 32
in micro-batches of 4, 40 steps at 5e-7, bf16 autocast, ``runs/big``) is the script's own.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch
from transformers import LlamaForCausalLM

from dpo_utils.runtime.models import pick_device_and_dtype
from tests.helpers import save_tiny_fallback_model, small_vocab_chat_tokenizer

ROOT = Path(__file__).resolve().parent.parent


def documented_train_script() -> str:
    """The ```python block starting with ``# train.py``, from README.md or docs/*.md."""
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        if page.exists():
            found += re.findall(r"```python\n(# train\.py\n.*?)```", page.read_text(encoding="utf-8"), flags=re.S)
    assert len(found) == 1, f"expected one '# train.py' block in README.md or docs/*.md, found {len(found)}"
    return found[0]


def tiny_fallback_model(cache: Path, like) -> dict:
    """A tiny random Llama, where the offline fallback looks; returns its weights. Its tokenizer has
    the chat template and special tokens of ``like`` (SmolLM2's) over a 512-token vocabulary learned
    from the shipped pairs: under the script's bf16 autocast, a CPU without native bf16 spends ~50x
    longer on each matmul, and SmolLM2's 49,152-token LM head made this test take 558 s on such a CPU."""
    rows = [json.loads(line) for line in (ROOT / "data" / "sentiment_pairs.jsonl").read_text("utf-8").splitlines()]
    tokenizer = small_vocab_chat_tokenizer(rows, like=like)
    return save_tiny_fallback_model(cache, tokenizer)


def test_the_documented_train_script_trains_under_two_processes(tokenizer, tmp_path):
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "sentiment_pairs.jsonl").write_bytes((ROOT / "data" / "sentiment_pairs.jsonl").read_bytes())
    (work / "train.py").write_text(documented_train_script())
    initial = tiny_fallback_model(tmp_path / "cache", like=tokenizer)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "HF_HUB_OFFLINE": "1",
        "DPO_TUTORIAL_CACHE": str(tmp_path / "cache"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train.py"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("using the bundled SmolLM2-135M-Instruct (Q4_1") == 2
    assert result.stdout.count("instead of 'Qwen/Qwen2.5-1.5B-Instruct'") == 2

    state = torch.load(work / "runs" / "big" / "checkpoint" / "state.pt", weights_only=True)
    assert state["step"] == 40 and state["config"]["batch_size"] == 32
    history = state["history"]
    assert abs(history[0]["loss"] - 0.6931) < 1e-3  # the policy starts as its reference
    # measured: margin 1.2e-3 and accuracy 1.0 at step 40 (lr 5e-7 on a tiny model), loss 0.69255
    assert history[-1]["rewards/margins"] > 5e-4 and history[-1]["rewards/accuracies"] >= 0.9
    assert history[-1]["loss"] < history[0]["loss"] - 3e-4
    final = LlamaForCausalLM.from_pretrained(work / "runs" / "big" / "final").state_dict()
    moved = max((final[k] - initial[k]).abs().max().item() for k in initial)
    assert moved > 5e-6, moved  # measured: 1.9e-5


def test_under_a_launcher_each_process_loads_onto_its_own_gpu(monkeypatch):
    """Before accelerate places the model, ``load_model_and_tokenizer`` already puts it on cuda:LOCAL_RANK."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert pick_device_and_dtype() == (torch.device("cuda:2"), torch.bfloat16)
    monkeypatch.delenv("LOCAL_RANK")
    assert pick_device_and_dtype()[0] == torch.device("cuda")
    assert pick_device_and_dtype("cpu") == (torch.device("cpu"), torch.float32)
