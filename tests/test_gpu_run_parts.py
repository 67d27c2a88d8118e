"""Notebook 08's parts: presets, LoRA reference, data splits, held-out metrics, win rate."""

import warnings

import pytest
import torch

from dpo_utils.data import PromptBoundaryWarning
from dpo_utils.evaluation import heldout_preference_metrics
from dpo_utils.hub_data import extract_prompt, fits, load_preference_splits, local_file, split_by_prompt
from dpo_utils.judging import win_rate
from dpo_utils.lora import attach_lora, reference_of, trainable_parameters
from dpo_utils.reference import compute_reference_logprobs
from dpo_utils.runtime.config import REPO_ROOT
from dpo_utils.runtime.presets import HUB_DATASET, PRESETS, SHIPPED_DATASET, pick_preset
from dpo_utils.trainer import DPOConfig, DPOTrainer
from tests.helpers import ONE_LAYER_WIDTH_16, TinyTokenizer, make_pairs, tiny_llama, tiny_llama_config, token_ids_of

pytestmark = pytest.mark.lowest_versions  # .ci/min-versions runs these


def test_presets_fit_their_machines_and_the_reduced_size_only_shrinks():
    assert pick_preset().name == "cpu"  # no GPU here
    assert PRESETS["t4"].dtype == "float16" and PRESETS["t4"].lora_rank and PRESETS["t4"].mixed_precision == "fp16"
    for preset in PRESETS.values():
        assert preset.batch_size % preset.micro_batch_size == 0
        if not preset.lora_rank:  # full fine-tuning: fp32 master weights, 5e-7; LoRA: 100x that or more
            assert preset.dtype == "float32" and preset.learning_rate <= 1e-6
        else:
            assert preset.learning_rate >= 5e-5
    reduced = pick_preset("t4")  # tests run at the reduced size
    assert (reduced.model, reduced.dtype, reduced.lora_rank) == (PRESETS["t4"].model, "float16", 16)
    assert reduced.steps < PRESETS["t4"].steps
    with pytest.raises(ValueError, match="preset"):
        pick_preset("tpu")


@pytest.mark.parametrize(
    "gib, bf16, expected",
    [
        (15.0, False, "t4"),
        (22.5, True, "mid-gpu"),
        (24.0, False, "t4"),
        (39.5, True, "mid-gpu"),
        (79.2, True, "large-gpu"),
        (139.8, True, "large-gpu"),
    ],
    ids=["T4", "L4", "24GB-without-bf16", "A100-40GB", "H100", "H200"],
)
def test_the_preset_is_picked_by_memory_and_bf16_support(monkeypatch, gib, bf16, expected):
    from types import SimpleNamespace

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda index: SimpleNamespace(total_memory=int(gib * 2**30))
    )
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    monkeypatch.delenv("DPO_TUTORIAL_PRESET", raising=False)
    assert pick_preset().name == expected


def test_the_preset_can_be_forced_by_the_environment(monkeypatch):
    monkeypatch.setenv("DPO_TUTORIAL_PRESET", "t4")
    assert pick_preset().name == "t4"


def test_offline_a_gpu_preset_keeps_its_code_path_on_the_shipped_data(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = pick_preset("t4")
    assert (offline.dataset, offline.judge) == (str(SHIPPED_DATASET), "vader")
    assert (offline.dtype, offline.mixed_precision, offline.lora_rank, offline.activation_checkpointing) == (
        "float16",
        "fp16",
        16,
        True,
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert pick_preset("t4").dataset == PRESETS["t4"].dataset


@pytest.mark.parametrize("name", ["t4", "mid-gpu", "large-gpu"])
def test_each_gpu_preset_fits_the_smallest_card_it_names_with_a_margin(name):
    from dpo_utils.runtime.presets import preset_memory

    estimate = preset_memory(PRESETS[name])["total"] * 1.15  # the estimate ran ~10-15 % under measured peaks
    assert estimate < 0.85 * PRESETS[name].card_memory_gib * 2**30


def test_lora_reference_is_the_base_model_and_training_moves_only_the_adapter():
    base = tiny_llama()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    policy, pairs = attach_lora(tiny_llama(), rank=4), make_pairs()
    trainable, total = trainable_parameters(policy)
    assert 0 < trainable < total / 2
    base_logps = compute_reference_logprobs(base, pairs, 0)
    assert torch.allclose(compute_reference_logprobs(policy, pairs, 0), base_logps, atol=1e-6)  # fresh adapter = base
    trainer = DPOTrainer(policy, TinyTokenizer(), pairs, DPOConfig(beta=0.5, learning_rate=5e-2, max_steps=3))
    for _ in range(3):
        trainer.train_step()
    assert not torch.allclose(compute_reference_logprobs(policy, pairs, 0), base_logps, atol=1e-4)
    with reference_of(policy) as reference:
        assert torch.allclose(compute_reference_logprobs(reference, pairs, 0), base_logps, atol=1e-6)
    frozen = {
        k.replace("base_model.model.", "").replace(".base_layer", ""): v
        for k, v in policy.state_dict().items()
        if "lora_" not in k
    }
    assert all(torch.equal(frozen[k], before[k]) for k in before)
    metrics = heldout_preference_metrics(policy, pairs, 0, beta=0.5)
    assert metrics["accuracy"] > 0.5 and metrics["loss"] < 0.69  # the pairs it trained on


def test_full_fine_tuning_needs_an_explicit_reference():
    with pytest.raises(ValueError, match="reference"):
        with reference_of(tiny_llama()):
            pass


def test_implicit_prompts_are_extracted_and_length_filter_drops_long_rows(tmp_path):
    user, a, b = (
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
        {"role": "assistant", "content": "b"},
    )
    assert extract_prompt({"chosen": [user, a], "rejected": [user, b]}) == {
        "prompt": [user],
        "chosen": [a],
        "rejected": [b],
    }
    explicit = {"prompt": "p", "chosen": "a", "rejected": "b"}
    assert extract_prompt(explicit) is explicit

    class WordTokenizer:
        eos_token = "</s>"
        chat_template = None

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [hash(w) % 1000 for w in text.split()]}

        def decode(self, ids):
            return " ".join(map(str, ids))

    # prompts end on a word boundary, so prompt + completion splits where the prompt ends
    with warnings.catch_warnings():
        warnings.simplefilter("error", PromptBoundaryWarning)
        assert fits({"prompt": "one two ", "chosen": "a b", "rejected": "c"}, WordTokenizer(), 4, 4)
        assert not fits({"prompt": "one two ", "chosen": "a b c d e", "rejected": "c"}, WordTokenizer(), 4, 4)
        assert not fits({"prompt": "p ", "chosen": "same", "rejected": "same"}, WordTokenizer(), 4, 4)
        assert not fits({"prompt": "one two three four five ", "chosen": "a", "rejected": "b"}, WordTokenizer(), 4, 4)


def test_held_out_prompts_never_appear_in_training():
    rows = [{"prompt": f"p{i // 2}", "chosen": f"a{i}", "rejected": f"b{i}"} for i in range(10)]
    train, test = split_by_prompt(rows, n_test=3)
    assert {r["prompt"] for r in train}.isdisjoint({r["prompt"] for r in test})
    assert len(test) == 4 and len(train) + len(test) == 10  # whole prompts: 2 pairs each


def test_shipped_pairs_split_for_the_offline_preset(tokenizer):
    cpu = PRESETS["cpu"]
    train, test = load_preference_splits(
        cpu.dataset, tokenizer, cpu.train_pairs, cpu.test_pairs, cpu.max_prompt_length, cpu.max_completion_length
    )
    assert (len(train), len(test)) == (96, 40) and cpu.dataset == str(SHIPPED_DATASET)
    assert {repr(r["prompt"]) for r in train}.isdisjoint({repr(r["prompt"]) for r in test})


def test_win_rate_counts_ties_as_half_and_gives_an_interval():
    result = win_rate([3, 2, 1, 5], [1, 2, 4, 0])
    assert (result["wins"], result["ties"], result["losses"], result["n"], result["n_prompts"]) == (2, 1, 1, 4, 4)
    assert result["rate"] == pytest.approx(2.5 / 4)
    assert result["low"] < result["rate"] < result["high"]
    many = win_rate([1] * 300 + [0] * 100, [0] * 300 + [1] * 100)  # independent comparisons: the normal interval
    assert many["rate"] == 0.75 and many["high"] - many["low"] == pytest.approx(
        2 * 1.96 * (0.75 * 0.25 / 400) ** 0.5, rel=0.1
    )
    with pytest.raises(ValueError, match="matched"):
        win_rate([1, 2], [1])


def test_win_rate_interval_resamples_prompts_not_samples():
    """12 prompts x 4 samples that always agree within a prompt: 12 independent outcomes, not 48."""
    policy = [1] * 28 + [0] * 20
    reference = [0] * 28 + [1] * 20
    prompts = [i // 4 for i in range(48)]
    by_prompt, naive = win_rate(policy, reference, prompts), win_rate(policy, reference)
    assert by_prompt["n_prompts"] == 12 and by_prompt["n"] == 48 and by_prompt["rate"] == naive["rate"]
    assert by_prompt["high"] - by_prompt["low"] > 1.6 * (naive["high"] - naive["low"])  # about 2x = sqrt(4)


def test_reward_model_judge_scores_each_conversation_the_same_alone_or_in_a_padded_batch(tokenizer, tmp_path):
    from transformers import LlamaForSequenceClassification

    from dpo_utils.judging import reward_model_judge

    torch.manual_seed(0)
    config = tiny_llama_config(**token_ids_of(tokenizer), **ONE_LAYER_WIDTH_16, num_labels=1)
    LlamaForSequenceClassification(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    judge = reward_model_judge(str(tmp_path), device="cpu", batch_size=4)
    prompts = [[{"role": "user", "content": "Rate the film."}]] * 3
    answers = ["Great.", "A long and winding answer about the film and its many scenes.", "Bad."]
    together = judge(prompts, answers)
    alone = [judge(prompts[:1], [answer])[0] for answer in answers]
    assert len(set(together)) == 3 and together == pytest.approx(alone, abs=1e-5)


def test_t4_code_path_gradient_checkpointing_with_lora_gives_the_same_step():
    """The t4 preset trains LoRA with gradient checkpointing and no prompt sharing: same loss and update."""
    results = []
    for checkpointing in (False, True):
        policy, pairs = attach_lora(tiny_llama(), rank=4), make_pairs()
        if checkpointing:
            from dpo_utils.runtime.models import enable_activation_checkpointing

            enable_activation_checkpointing(policy)
            assert any(getattr(module, "gradient_checkpointing", False) for module in policy.modules())
        config = DPOConfig(
            beta=0.5, learning_rate=1e-2, batch_size=8, micro_batch_size=2, max_steps=2, logprob_mode="lean"
        )
        trainer = DPOTrainer(policy, TinyTokenizer(), pairs, config)
        rows = [trainer.train_step() for _ in range(2)]
        results.append((rows[-1]["loss"], compute_reference_logprobs(policy, pairs, 0)))
    assert abs(results[0][0] - results[1][0]) < 1e-5
    assert torch.allclose(results[0][1], results[1][1], atol=1e-5)


def test_half_precision_base_with_fp32_adapters_trains_to_finite_values():
    """The t4 preset: an fp16 base, fp32 adapters (peft keeps them fp32), fp16 autocast with loss scaling."""
    policy = attach_lora(tiny_llama().to(torch.float16), rank=4)
    assert {p.dtype for p in policy.parameters() if p.requires_grad} == {torch.float32}
    trainer = DPOTrainer(
        policy,
        TinyTokenizer(),
        make_pairs(),
        DPOConfig(beta=0.5, learning_rate=1e-2, max_steps=4, mixed_precision="fp16"),
    )
    rows = [row for row in (trainer.train_step() for _ in range(4)) if not row["skipped"]]
    assert (
        len(rows) >= 3
        and all(torch.isfinite(torch.tensor(row["loss"])) for row in rows)
        and rows[-1]["loss"] < rows[0]["loss"]
    )
    assert {p.dtype for p in policy.parameters() if p.requires_grad} == {torch.float32}


def test_our_loss_equals_trls_for_a_lora_policy_far_from_its_reference(tokenizer):
    import math

    from dpo_utils.data import prepare_preference_data
    from dpo_utils.trl_check import trl_dpo_loss

    make = lambda: tiny_llama(0, **token_ids_of(tokenizer))
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Review film {i}."}],
            "chosen": [{"role": "assistant", "content": "Loved it, superb."}],
            "rejected": [{"role": "assistant", "content": f"Hated it, {i} dull hours."}],
        }
        for i in range(4)
    ]
    pairs, _ = prepare_preference_data(rows, tokenizer)
    policy = attach_lora(make(), rank=4)
    trainer = DPOTrainer(policy, tokenizer, pairs, DPOConfig(beta=0.1, learning_rate=5e-2, batch_size=4, max_steps=4))
    for _ in range(4):
        trainer.train_step()
    policy.eval()
    ours = heldout_preference_metrics(policy, pairs, tokenizer.pad_token_id, beta=0.1)["loss"]
    theirs = trl_dpo_loss(policy, make(), tokenizer, rows, beta=0.1)
    assert abs(ours - math.log(2)) > 0.05  # far from the reference: the comparison can fail
    assert abs(ours - theirs) < 1e-4
    # the pitfall: no reference for an already trained adapter -> TRL compares the policy with itself
    assert abs(trl_dpo_loss(policy, None, tokenizer, rows, beta=0.1) - math.log(2)) < 1e-6


def test_a_preset_prints_without_this_machines_folders():
    cpu = pick_preset("cpu")
    assert str(REPO_ROOT) not in repr(cpu) and local_file(cpu.dataset).resolve() == REPO_ROOT / cpu.dataset
    assert local_file(HUB_DATASET) is None
