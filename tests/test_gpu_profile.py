"""The GPU's precision path on a CPU (DPO_TUTORIAL_GPU_PROFILE), reference and policy in one
precision by construction, and the guard against half-precision overflow in samples and log-probs."""

import copy
import math

import pytest
import torch

from dpo_utils.checkpoints import StaleCheckpointError
from dpo_utils.data import prepare_preference_data
from dpo_utils.iterative import run_rounds
from dpo_utils.numerics import NumericalFailureError, check_not_degenerate
from dpo_utils.reference import ReferenceLogprobs, compute_reference_logprobs, reference_logprobs
from dpo_utils.runtime.config import DATA_DIR
from dpo_utils.runtime.models import pick_device_and_dtype
from dpo_utils.runtime.precision import GPU_PROFILE_VARIABLE, default_mixed_precision, gpu_profile
from dpo_utils.runtime.presets import hardware_preset_name, pick_preset
from dpo_utils.sampling import sample_completions, sequence_logprobs_of
from dpo_utils.trainer import DPOConfig, DPOTrainer
from tests.helpers import TinyTokenizer, make_pairs, tiny_llama, token_ids_of

PRECISIONS = ("no", "bf16", "fp16")


@pytest.fixture(autouse=True)
def no_profile(monkeypatch):
    monkeypatch.delenv(GPU_PROFILE_VARIABLE, raising=False)
    monkeypatch.delenv("DPO_TUTORIAL_PRESET", raising=False)


def test_the_profile_sets_precision_frozen_dtype_and_preset_on_a_cpu(monkeypatch):
    assert gpu_profile() is None and default_mixed_precision("cpu") == "no" and hardware_preset_name() == "cpu"
    expected = {"bf16": ("bf16", torch.bfloat16, "large-gpu"), "t4": ("fp16", torch.float16, "t4")}
    for profile, (precision, dtype, preset) in expected.items():
        monkeypatch.setenv(GPU_PROFILE_VARIABLE, profile)
        assert default_mixed_precision("cpu") == precision
        assert pick_device_and_dtype("cpu") == (torch.device("cpu"), dtype)  # judges, frozen LoRA bases
        assert hardware_preset_name() == preset and pick_preset().name == preset
        trainer = DPOTrainer(tiny_llama(), TinyTokenizer(), make_pairs(), DPOConfig())
        assert trainer.mixed_precision == precision and trainer.device.type == "cpu"  # the device stays
    monkeypatch.setenv(GPU_PROFILE_VARIABLE, "a100")
    with pytest.raises(ValueError, match="DPO_TUTORIAL_GPU_PROFILE='a100'"):
        gpu_profile()


@pytest.fixture(scope="module")
def shipped_pairs(tokenizer):
    pairs, _ = prepare_preference_data(DATA_DIR / "sentiment_pairs.jsonl", tokenizer, 128, 48)
    return pairs[:12]  # prompts and completions of many lengths: padding differs from batch to batch


def model_for(tokenizer):
    return tiny_llama(0, **token_ids_of(tokenizer), max_position_embeddings=512)


def _assert_starts_at_log_2(row):
    assert abs(row["loss"] - math.log(2)) < 1e-6, row["loss"]
    assert abs(row["rewards/margins"]) < 1e-6, row["rewards/margins"]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_step_one_is_log_2_when_the_trainer_computes_the_reference(tokenizer, shipped_pairs, precision):
    config = DPOConfig(batch_size=4, micro_batch_size=2, max_steps=1, mixed_precision=precision, seed=3)
    _assert_starts_at_log_2(DPOTrainer(model_for(tokenizer), tokenizer, shipped_pairs, config).train_step())


@pytest.mark.parametrize("precision", PRECISIONS)
def test_step_one_is_log_2_with_reference_logprobs_computed_once_for_several_runs(tokenizer, shipped_pairs, precision):
    """Notebooks 07 and 09: one reference pass, then runs from fresh copies of the reference."""
    reference = model_for(tokenizer).requires_grad_(False)
    runs = [DPOConfig(beta=beta, batch_size=4, max_steps=1, mixed_precision=precision, seed=1) for beta in (0.1, 0.5)]
    reference_logps = reference_logprobs(reference, shipped_pairs, tokenizer.pad_token_id, runs[0])
    assert reference_logps.mixed_precision == precision
    for config in runs:
        policy = copy.deepcopy(reference).requires_grad_(True)
        _assert_starts_at_log_2(
            DPOTrainer(policy, tokenizer, shipped_pairs, config, None, reference_logps).train_step()
        )


@pytest.mark.parametrize("precision", PRECISIONS)
def test_one_shared_reference_serves_runs_of_other_seeds_and_objectives(tokenizer, shipped_pairs, precision):
    """Notebooks give every run the same reference log-probs; the trainer uses them where they fit."""
    reference = model_for(tokenizer).requires_grad_(False)
    shared = reference_logprobs(
        reference, shipped_pairs, tokenizer.pad_token_id, DPOConfig(batch_size=4, mixed_precision=precision)
    )
    other_seed = DPOConfig(batch_size=4, max_steps=1, mixed_precision=precision, seed=1)  # other batches
    policy = copy.deepcopy(reference).requires_grad_(True)
    trainer = DPOTrainer(policy, tokenizer, shipped_pairs, other_seed, None, shared)
    assert (trainer.reference_logps is shared) == (precision == "no")  # half precision: computes its own
    _assert_starts_at_log_2(trainer.train_step())
    left = DPOConfig(batch_size=4, max_steps=1, mixed_precision=precision, padding_side="left")  # same batches
    policy = copy.deepcopy(reference).requires_grad_(True)
    trainer = DPOTrainer(policy, tokenizer, shipped_pairs, left, None, shared)
    assert (trainer.reference_logps is shared) == (precision == "no")  # padded the other way
    _assert_starts_at_log_2(trainer.train_step())
    sft = DPOConfig(objective="sft", batch_size=4, max_steps=1, mixed_precision=precision)
    policy = copy.deepcopy(reference).requires_grad_(True)
    assert DPOTrainer(policy, tokenizer, shipped_pairs, sft, None, shared).reference_logps is None


@pytest.mark.parametrize("precision", PRECISIONS)
def test_step_one_is_log_2_in_the_first_round_of_iterative_dpo(tokenizer, tmp_path, precision):
    """Notebook 11: run_rounds computes the reference log-probs from the reference model."""
    reference = model_for(tokenizer).requires_grad_(False)
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Review film {k}."}],
            "chosen": [{"role": "assistant", "content": "A fine film, well acted and moving." * (k + 1)}],
            "rejected": [{"role": "assistant", "content": "Dull."}],
        }
        for k in range(4)
    ]
    config = DPOConfig(batch_size=4, max_steps=1, mixed_precision=precision, save_final_model=False)
    summary = run_rounds(
        copy.deepcopy(reference).requires_grad_(True), reference, tokenizer, rows, None, [config], tmp_path
    )
    _assert_starts_at_log_2(summary[0]["history"][0])


def test_reference_logprobs_of_another_precision_are_refused(tokenizer, shipped_pairs):
    reference = model_for(tokenizer)
    fp32 = reference_logprobs(reference, shipped_pairs, tokenizer.pad_token_id, DPOConfig(mixed_precision="no"))
    with pytest.raises(ValueError, match="mixed_precision='no'.*'bf16'"):
        DPOTrainer(copy.deepcopy(reference), tokenizer, shipped_pairs, DPOConfig(mixed_precision="bf16"), None, fp32)
    with pytest.raises(TypeError, match="ReferenceLogprobs"):  # a bare tensor does not say its precision
        DPOTrainer(
            copy.deepcopy(reference), tokenizer, shipped_pairs, DPOConfig(mixed_precision="no"), None, fp32.values
        )


def test_a_checkpoint_whose_reference_has_another_precision_is_not_resumed(monkeypatch, tmp_path):
    pairs, config = make_pairs(), DPOConfig(batch_size=4, max_steps=1)  # mixed_precision: the default
    DPOTrainer(tiny_llama(), TinyTokenizer(), pairs, config, tmp_path).train()
    monkeypatch.setenv(GPU_PROFILE_VARIABLE, "bf16")  # the same config now computes in bf16
    config.max_steps = 2
    with pytest.raises(StaleCheckpointError, match="mixed_precision='no'.*'bf16'"):
        DPOTrainer(tiny_llama(), TinyTokenizer(), pairs, config, tmp_path).train()


def _plant_overflow(model):
    """Make the last layer's output inf, as an fp16 activation past 65504 would be."""
    return model.model.layers[-1].register_forward_hook(lambda module, args, output: output * float("inf"))


def test_non_finite_logits_while_sampling_stop_with_the_precision_and_advice(tokenizer):
    model = model_for(tokenizer)
    _plant_overflow(model)
    prompts = [[{"role": "user", "content": "Review a film."}]]
    with pytest.raises(
        NumericalFailureError,
        match=r"non-finite logits.*mixed_precision='fp16' \(weights float32\)"
        r".*float32.*GiB of a T4",
    ):
        sample_completions(model, tokenizer, prompts, max_new_tokens=4, mixed_precision="fp16")


def test_non_finite_logprobs_stop_evaluation_and_the_reference_pass(tokenizer, shipped_pairs):
    model = model_for(tokenizer)
    samples = sample_completions(model, tokenizer, [[{"role": "user", "content": "Hi."}]], max_new_tokens=4)
    _plant_overflow(model)
    with pytest.raises(NumericalFailureError, match="log-probs of sampled completions are not finite"):
        sequence_logprobs_of(model, samples, tokenizer.pad_token_id, mixed_precision="bf16")
    with pytest.raises(NumericalFailureError, match="log-probs of the preference pairs are not finite"):
        compute_reference_logprobs(model, shipped_pairs[:2], tokenizer.pad_token_id, mixed_precision="fp16")


def test_samples_of_one_repeated_token_are_refused_in_half_precision_only():
    exclamations, review = [0] * 2 + [999] * 14, list(range(16))
    check_not_degenerate([exclamations, exclamations, review], "no")  # fp32: the model's own doing, kept
    check_not_degenerate([exclamations, review, review], "fp16")  # one of three: not most
    with pytest.raises(NumericalFailureError, match="2 of 3 samples are mostly one repeated token"):
        check_not_degenerate([exclamations, exclamations, review], "fp16")


def test_reference_logprobs_carry_their_precision_through_a_checkpoint(tmp_path):
    trainer = DPOTrainer(tiny_llama(), TinyTokenizer(), make_pairs(), DPOConfig(batch_size=4, max_steps=1), tmp_path)
    trainer.train()
    state = torch.load(tmp_path / "checkpoint" / "state.pt", weights_only=True)
    assert state["reference_logps"]["mixed_precision"] == "no"
    assert isinstance(trainer.reference_logps, ReferenceLogprobs)
