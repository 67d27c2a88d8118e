"""The benchmark runs end to end, and dpo_utils and TRL train the same thing (same final loss)."""

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "dpo_step.py"


def test_dpo_utils_and_trl_agree_on_the_loss_after_training():
    out = subprocess.run([sys.executable, str(SCRIPT), "--configs", "dpo_utils", "trl-precompute", "--steps", "1",
                          "--pairs", "2", "--prompt-tokens", "12", "--completion-tokens", "10", "--lr", "1e-4"],
                         capture_output=True, text=True, timeout=600)
    rows = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\S+)\s+[\d.]+\s+\d+\s+[\d.]+\s+\d+\s+([\d.]+)$", out.stdout, re.M)}
    assert set(rows) == {"dpo_utils", "trl-precompute"}, out.stdout + out.stderr[-2000:]
    assert rows["dpo_utils"] < 0.69  # two steps at lr 1e-4 moved away from log 2
    assert abs(rows["dpo_utils"] - rows["trl-precompute"]) < 2e-3


# --- random-initialised public architectures (dpo_utils.architectures) ---

import pytest  # noqa: E402


def _count_from_fields(c):
    """Parameters of a tied-embedding Llama/Qwen2 decoder, counted by hand from the config fields."""
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    q, kv = c.num_attention_heads * head_dim, c.num_key_value_heads * head_dim
    attn = c.hidden_size * (q + 2 * kv) + q * c.hidden_size
    if c.model_type == "qwen2":
        attn += q + 2 * kv  # q/k/v biases
    mlp = 3 * c.hidden_size * c.intermediate_size
    return c.vocab_size * c.hidden_size + c.num_hidden_layers * (attn + mlp + 2 * c.hidden_size) + c.hidden_size


# published totals, equal up to their rounding: SmolLM2-135M 134.5M; the Qwen2.5 model cards
# 0.49B (0.36B non-embedding) and 1.54B (1.31B)
@pytest.mark.parametrize("name,total,non_embedding,rounding", [("smollm2-135m", 134.5e6, None, 0.05e6),
                                                               ("qwen2.5-0.5b", 0.49e9, 0.36e9, 0.005e9),
                                                               ("qwen2.5-1.5b", 1.54e9, 1.31e9, 0.005e9)])
def test_architectures_have_the_published_sizes(name, total, non_embedding, rounding):
    from dpo_utils.architectures import count_parameters, random_model

    model = random_model(name, device="meta")  # shapes only, no memory
    n = count_parameters(model)
    assert n == _count_from_fields(model.config)
    assert abs(n - total) <= rounding
    if non_embedding:
        assert abs(count_parameters(model, embeddings=False) - non_embedding) <= rounding
    assert model.config.tie_word_embeddings and model.lm_head.weight is model.get_input_embeddings().weight


def test_smollm2_architecture_matches_the_bundled_model():
    import json

    from dpo_utils.architectures import architecture_config
    from dpo_utils.models import offline_model_dir

    bundled = json.loads((offline_model_dir() / "config.json").read_text())
    ours = architecture_config("smollm2-135m")
    for field in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "head_dim", "max_position_embeddings", "tie_word_embeddings", "hidden_act"):
        assert getattr(ours, field) == bundled[field], field
    assert ours.rope_parameters["rope_theta"] == bundled["rope_parameters"]["rope_theta"]


def test_random_model_is_fixed_by_its_seed_and_the_tokenizer_fits():
    import torch

    from dpo_utils.architectures import ARCHITECTURES, architecture_config, random_model_and_tokenizer

    small = {"num_hidden_layers": 1}
    a, tok = random_model_and_tokenizer("smollm2-135m", seed=3, **small)
    b, _ = random_model_and_tokenizer("smollm2-135m", seed=3, **small)
    c, _ = random_model_and_tokenizer("smollm2-135m", seed=4, **small)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.model.layers[0].mlp.up_proj.weight, c.model.layers[0].mlp.up_proj.weight)
    assert a.config.pad_token_id == tok.pad_token_id != tok.eos_token_id
    assert all(len(tok) <= architecture_config(n).vocab_size for n in ARCHITECTURES)
    with pytest.raises(ValueError, match="qwen2.5-0.5b"):
        random_model_and_tokenizer("qwen-0.5b")
