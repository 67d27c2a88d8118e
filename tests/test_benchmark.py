"""The benchmark runs end to end, dpo_utils and TRL train the same thing (same final loss), and its
parts (random architectures, batch lengths, MFU) are right."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "dpo_step.py"


def bench():
    spec = importlib.util.spec_from_file_location("dpo_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dpo_utils_and_trl_agree_on_the_loss_after_training(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--configs",
            "dpo_utils-padding-free",
            "dpo_utils",
            "trl-precompute",
            "--lengths",
            "lognormal",
            "--steps",
            "1",
            "--pairs",
            "2",
            "--prompt-tokens",
            "12",
            "--completion-tokens",
            "10",
            "--lr",
            "1e-4",
            "--json",
            str(tmp_path / "out.json"),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert (tmp_path / "out.json").exists(), out.stdout + out.stderr[-2000:]
    report = json.loads((tmp_path / "out.json").read_text())
    rows = {r["config"]: r for r in report["results"]}
    assert set(rows) == {"dpo_utils-padding-free", "dpo_utils", "trl-precompute"}, out.stdout
    losses = {name: r["final_loss"] for name, r in rows.items()}
    assert losses["dpo_utils"] < 0.69  # two steps at lr 1e-4 moved away from log 2
    assert max(losses.values()) - min(losses.values()) < 2e-3
    r = rows["dpo_utils"]
    assert (
        r["padded_tokens_per_step"] > r["tokens_per_step"]
    )  # log-normal lengths: padding a padded batch would compute
    assert (
        report["environment"]["torch"] == torch.__version__
        and report["environment"]["settings"]["checkpointing"] == "off"
    )
    assert "device: " in out.stdout and "lognormal lengths" in out.stdout


def test_log_normal_lengths_have_the_requested_mean_and_are_fixed_by_the_seed():
    b = bench()
    lengths = b.batch_lengths("lognormal", 4000, 64, 128, sigma=0.6)
    prompts, completions = [p for p, _, _ in lengths], [c for _, c, r in lengths] + [r for _, _, r in lengths]
    assert abs(sum(prompts) / len(prompts) - 64) < 3 and abs(sum(completions) / len(completions) - 128) < 5
    assert min(prompts) >= 4 and max(completions) <= 6 * 128 and max(prompts) > 2 * 64  # a real spread
    assert b.batch_lengths("lognormal", 8, 64, 64) == b.batch_lengths("lognormal", 8, 64, 64)
    assert b.batch_lengths("fixed", 3, 64, 32) == [(64, 32, 32)] * 3


def test_default_config_is_dpo_utils_defaults_and_auto_shares_fixed_and_packs_log_normal_batches():
    """The benchmark's plain dpo_utils runs DPOConfig's defaults; on its default batches (4 pairs of ~64 + 64
    tokens) the default logprob_mode, "auto", shares the prompt when lengths are fixed and packs log-normal ones."""
    from transformers import AutoTokenizer

    from dpo_utils.data import prepare_preference_data
    from dpo_utils.logprob_modes import resolve_logprob_mode
    from dpo_utils.runtime.model_cache import offline_model_dir
    from dpo_utils.trainer import DPOConfig

    b = bench()
    assert b.LOGPROB_MODES["dpo_utils"] == DPOConfig().logprob_mode == "auto"
    assert set(b.LOGPROB_MODES) == {name for name in b.CONFIGS if name.startswith("dpo_utils")}
    tokenizer = AutoTokenizer.from_pretrained(offline_model_dir())
    picked = {}
    for kind in ("fixed", "lognormal"):
        lengths = b.batch_lengths(kind, 4, 64, 64)
        longest = max(max(t) for t in lengths)
        pairs, _ = prepare_preference_data(
            b.make_rows(lengths), tokenizer, max_prompt_length=4 * longest, max_completion_length=4 * longest
        )
        picked[kind] = resolve_logprob_mode("auto", pairs)
    assert picked == {"fixed": "shared", "lognormal": "packed"}


@pytest.mark.parametrize(
    "name,peak",
    [
        ("NVIDIA H100 80GB HBM3", 989),
        ("NVIDIA H100 PCIe", 756),
        ("NVIDIA H200", 989),
        ("NVIDIA A100-SXM4-80GB", 312),
        ("NVIDIA L4", 121),
        ("Tesla T4", 65),
        ("NVIDIA L40S", None),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_known_gpu_peaks(name, peak):
    assert bench().known_peak(name) == peak


def test_mfu_counts_the_matmul_parameters():
    from tests.helpers import tiny_llama

    b = bench()
    tied = tiny_llama()
    assert b.matmul_parameters(tied) == sum(p.numel() for p in tied.parameters())  # the shared matrix once, as LM head
    untied = tiny_llama(num_hidden_layers=1, tie_word_embeddings=False)
    assert (
        b.matmul_parameters(untied) == sum(p.numel() for p in untied.parameters()) - 64 * 32
    )  # lookup table left out
    result = {"matmul_params": 135_000_000, "tokens_per_s": 50_000.0}
    assert b.mfu(result, 989.0) == pytest.approx(6 * 135e6 * 5e4 / 989e12)
    assert b.mfu(result, None) is None


# --- random-initialised public architectures (dpo_utils.runtime.architectures) ---


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
@pytest.mark.parametrize(
    "name,total,non_embedding,rounding",
    [
        ("smollm2-135m", 134.5e6, None, 0.05e6),
        ("qwen2.5-0.5b", 0.49e9, 0.36e9, 0.005e9),
        ("qwen2.5-1.5b", 1.54e9, 1.31e9, 0.005e9),
    ],
)
def test_architectures_have_the_published_sizes(name, total, non_embedding, rounding):
    from dpo_utils.runtime.architectures import count_parameters, random_model

    model = random_model(name, device="meta")  # shapes only, no memory
    n = count_parameters(model)
    assert n == _count_from_fields(model.config)
    assert abs(n - total) <= rounding
    if non_embedding:
        assert abs(count_parameters(model, embeddings=False) - non_embedding) <= rounding
    assert model.config.tie_word_embeddings and model.lm_head.weight is model.get_input_embeddings().weight


def test_smollm2_architecture_matches_the_bundled_model():
    import json

    from dpo_utils.runtime.architectures import architecture_config
    from dpo_utils.runtime.model_cache import offline_model_dir

    bundled = json.loads((offline_model_dir() / "config.json").read_text())
    ours = architecture_config("smollm2-135m")
    for field in (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "max_position_embeddings",
        "tie_word_embeddings",
        "hidden_act",
    ):
        assert getattr(ours, field) == bundled[field], field
    theta = lambda config: (config.get("rope_parameters") or config)["rope_theta"]  # 5.x nests it, 4.x does not
    assert theta(ours.to_dict()) == theta(bundled) == 100000.0


def test_random_model_is_fixed_by_its_seed_and_the_tokenizer_fits():
    import torch

    from dpo_utils.runtime.architectures import ARCHITECTURES, architecture_config, random_model_and_tokenizer

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


def test_results_go_to_runs_unless_a_folder_is_given(tmp_path):
    from dpo_utils.runtime.config import RUNS_DIR

    b = bench()
    assert b.results_path("cpu_off.json") == RUNS_DIR / "benchmarks" / "cpu_off.json"
    assert b.results_path(str(tmp_path / "out.json")) == tmp_path / "out.json"
    dated = b.results_path(None)
    assert dated.parent == RUNS_DIR / "benchmarks" and dated.name.startswith("dpo_step-")
    assert set(b.QUICK_CONFIGS) < set(b.CONFIGS)
