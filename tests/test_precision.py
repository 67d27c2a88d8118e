"""Mixed precision in the trainer: fp32 master weights, bf16/fp16 autocast, loss scaling, skipped steps."""

import pytest
import torch

from dpo_utils.runtime.precision import fraction_changed, trainable_copy
from dpo_utils.trainer import DPOConfig, DPOTrainer, NonFiniteTrainingError
from tests.helpers import TinyTokenizer, make_pairs, tiny_llama


def test_bf16_autocast_step_at_a_tiny_learning_rate_changes_the_fp32_weights():
    model = tiny_llama()
    trainer = DPOTrainer(
        model, TinyTokenizer(), make_pairs(), DPOConfig(learning_rate=5e-7, mixed_precision="bf16", max_steps=1)
    )
    before = trainable_copy(model)
    trainer.train_step()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert fraction_changed(before, model) >= 0.99


def test_the_same_update_applied_to_bf16_weights_is_rounded_away():
    """Why the trainer keeps fp32 master weights: AdamW on bf16 weights at lr 5e-7 changes almost nothing."""
    model = tiny_llama().to(torch.bfloat16)
    before = trainable_copy(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-7)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()
    assert fraction_changed(before, model) < 0.05


def test_trainer_refuses_half_precision_trainable_weights():
    with pytest.raises(ValueError, match="not float32"):
        DPOTrainer(tiny_llama().to(torch.bfloat16), TinyTokenizer(), make_pairs(), DPOConfig())


def _fp16_gradients(loss_scaling: bool):
    """Gradients of one fp16-autocast accumulation whose true gradients are far below fp16's range."""
    model = tiny_llama()
    trainer = DPOTrainer(model, TinyTokenizer(), make_pairs(), DPOConfig(beta=1e-6, mixed_precision="fp16"))
    trainer.ensure_reference_logps()
    if not loss_scaling:
        trainer.scaler = torch.amp.GradScaler("cpu", enabled=False)
    trainer.accumulate_gradients(list(range(8)))
    trainer.scaler.unscale_(trainer.optimizer)
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def test_fp16_loss_scaling_keeps_gradients_that_underflow_without_it():
    reference = tiny_llama()
    trainer = DPOTrainer(reference, TinyTokenizer(), make_pairs(), DPOConfig(beta=1e-6, mixed_precision="no"))
    trainer.ensure_reference_logps()
    trainer.accumulate_gradients(list(range(8)))
    fp32 = torch.cat([p.grad.flatten() for p in reference.parameters()])
    unscaled, scaled = _fp16_gradients(False), _fp16_gradients(True)
    assert (unscaled == 0).float().mean() > 0.9  # underflow: most gradients flushed to zero
    assert (scaled == 0).float().mean() < 0.1
    assert torch.nn.functional.cosine_similarity(scaled, fp32, dim=0) > 0.99


def _plant_overflow(model):
    """Make every later backward produce inf gradients, as an fp16 overflow would."""
    weight = model.get_input_embeddings().weight
    return weight.register_hook(lambda grad: torch.full_like(grad, float("inf")))


def test_a_non_finite_step_is_skipped_counted_and_changes_nothing():
    model = tiny_llama()
    trainer = DPOTrainer(
        model, TinyTokenizer(), make_pairs(), DPOConfig(batch_size=8, learning_rate=1e-3, max_steps=3)
    )
    trainer.train_step()  # one good step, so AdamW has state to protect
    handle = _plant_overflow(model)
    weights, adam = (
        trainable_copy(model),
        {k: v.clone() for k, v in trainer.optimizer.state_dict()["state"][0].items()},
    )
    row = trainer.train_step()
    assert row["skipped"] == 1 and trainer.skipped_steps == 1
    assert fraction_changed(weights, model) == 0
    for key, value in trainer.optimizer.state_dict()["state"][0].items():
        assert torch.equal(value, adam[key]), key
    handle.remove()
    assert trainer.train_step()["skipped"] == 0 and fraction_changed(weights, model) > 0.5  # training goes on


def test_many_skipped_steps_in_a_row_stop_with_advice(tmp_path):
    model = tiny_llama()
    trainer = DPOTrainer(
        model,
        TinyTokenizer(),
        make_pairs(),
        DPOConfig(batch_size=8, max_steps=10, max_consecutive_skips=3),
        output_dir=tmp_path,
    )
    _plant_overflow(model)
    with pytest.raises(NonFiniteTrainingError, match="3 steps in a row"):
        trainer.train()
    assert (tmp_path / "checkpoint" / "state.pt").exists()


def test_fp16_run_trains_on_cpu_with_the_t4_code_path():
    model, pairs = tiny_llama(), make_pairs()
    trainer = DPOTrainer(
        model, TinyTokenizer(), pairs, DPOConfig(beta=0.5, learning_rate=1e-2, mixed_precision="fp16", max_steps=6)
    )
    history = trainer.train()
    applied = [row["loss"] for row in history if not row["skipped"]]
    assert len(applied) >= 4 and applied[-1] < applied[0]


def test_loading_for_training_is_float32_even_where_half_precision_is_native(monkeypatch):
    from dpo_utils.runtime import models

    monkeypatch.setattr(models, "pick_device_and_dtype", lambda device=None: (torch.device("cpu"), torch.bfloat16))
    model, _ = models.load_model_and_tokenizer(device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_non_finite_values_in_fp32_blame_inputs_or_weights_not_the_precision():
    from dpo_utils.numerics import NumericalFailureError, check_finite_logprobs

    nan = torch.tensor([0.0, float("nan")])
    with pytest.raises(NumericalFailureError, match="ran in fp32.*weights that are already inf or NaN") as error:
        check_finite_logprobs(nan, "no", "log-probs", tiny_llama())
    assert "Try mixed_precision" not in str(error.value) and "bf16 or fp16 would not help" in str(error.value)
    with pytest.raises(NumericalFailureError, match="Try mixed_precision='no' or 'fp16'"):
        check_finite_logprobs(nan, "bf16", "log-probs", tiny_llama())
    with pytest.raises(NumericalFailureError, match="Try mixed_precision"):  # fp32 compute, bf16 weights
        check_finite_logprobs(nan, "no", "log-probs", tiny_llama().to(torch.bfloat16))
