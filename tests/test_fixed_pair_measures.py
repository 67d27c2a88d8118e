"""Log-ratios of one fixed set of pairs during training, their plot, and held-out accuracy with an
interval over prompts."""

import dataclasses

import matplotlib

matplotlib.use("Agg")
import pytest
import torch

from dpo_utils.evaluation import (
    heldout_accuracy_by_prompt,
    heldout_preference_metrics,
    logratios_during_training,
    pair_logratios,
)
from dpo_utils.intervals import mean_with_prompt_interval
from dpo_utils.logprob_modes import batch_logprobs
from dpo_utils.plotting import plot_logratios
from dpo_utils.trainer import DPOConfig, DPOTrainer
from tests.helpers import TinyTokenizer, make_pairs, tiny_llama

CONFIG = dict(beta=0.5, learning_rate=1e-2, batch_size=4, max_steps=3)


def test_logratios_start_at_zero_and_follow_the_same_run_as_train():
    pairs = make_pairs(8)
    measured = DPOTrainer(tiny_llama(), TinyTokenizer(), pairs, DPOConfig(**CONFIG))
    rows = logratios_during_training(measured, [0, 2, 5], at_steps=[3, 0, 1])
    plain = DPOTrainer(tiny_llama(), TinyTokenizer(), pairs, DPOConfig(**CONFIG))
    plain.train()
    assert [row["step"] for row in rows] == [0, 1, 3] and measured.step == 3
    assert torch.equal(rows[0]["chosen"], torch.zeros(3)) and torch.equal(rows[0]["rejected"], torch.zeros(3))
    assert [r["loss"] for r in measured.history] == pytest.approx([r["loss"] for r in plain.history], abs=1e-6)
    # the last row, by another code path: full logits, minus the stored reference log-probs
    with torch.no_grad():
        chosen, rejected, _ = batch_logprobs(measured.model, [pairs[i] for i in (0, 2, 5)], 0, mode="full")
    reference = measured.reference_logps.values[[0, 2, 5]]
    assert torch.allclose(rows[-1]["chosen"], chosen - reference[:, 0], atol=1e-4)
    assert torch.allclose(rows[-1]["rejected"], rejected - reference[:, 1], atol=1e-4)
    assert (rows[-1]["chosen"] - rows[-1]["rejected"]).mean() > 0.1  # DPO separated the pairs it trained on


def test_logratios_refuse_steps_already_passed_and_mismatched_reference_rows():
    trainer = DPOTrainer(tiny_llama(), TinyTokenizer(), make_pairs(8), DPOConfig(**CONFIG))
    trainer.train_step()
    with pytest.raises(ValueError, match="none before the trainer's step 1"):
        logratios_during_training(trainer, [0], at_steps=[0, 2])
    with pytest.raises(ValueError, match="3 pairs but 2 rows"):
        pair_logratios(trainer.model, make_pairs(3), torch.zeros(2, 2), 0)


def test_plot_logratios_draws_both_means_and_the_zero_line():
    rows = [
        {"step": 0, "chosen": torch.zeros(4), "rejected": torch.zeros(4)},
        {"step": 5, "chosen": torch.tensor([1.0, 2.0, 3.0, 4.0]), "rejected": torch.tensor([-1.0, -2.0, -3.0, -6.0])},
    ]
    lines = {line.get_label(): line for line in plot_logratios(rows).axes[0].get_lines()}
    assert list(lines["chosen (mean of 4 pairs)"].get_ydata()) == [0.0, 2.5]
    assert list(lines["rejected (mean of 4 pairs)"].get_ydata()) == [0.0, -3.0]
    assert set(lines["reference (log-ratio 0)"].get_ydata()) == {0.0}


def test_mean_with_prompt_interval_resamples_prompts_not_items():
    """12 prompts x 2 pairs that always agree within a prompt: 12 independent outcomes, not 24."""
    values = [1.0] * 16 + [0.0] * 8
    by_prompt = mean_with_prompt_interval(values, [i // 2 for i in range(24)])
    naive = mean_with_prompt_interval(values, range(24))
    assert by_prompt["mean"] == naive["mean"] == pytest.approx(16 / 24)
    assert (by_prompt["n"], by_prompt["n_prompts"], naive["n_prompts"]) == (24, 12, 24)
    assert by_prompt["low"] < by_prompt["mean"] < by_prompt["high"]
    assert by_prompt["high"] - by_prompt["low"] > 1.25 * (naive["high"] - naive["low"])  # about sqrt(2)
    many = mean_with_prompt_interval([1.0] * 300 + [0.0] * 100, range(400))  # independent: the normal interval
    assert many["high"] - many["low"] == pytest.approx(2 * 1.96 * (0.75 * 0.25 / 400) ** 0.5, rel=0.1)
    with pytest.raises(ValueError, match="one prompt per value"):
        mean_with_prompt_interval([1.0, 0.0], [0])


def test_heldout_accuracy_by_prompt_matches_the_pooled_accuracy_and_counts_prompts():
    pairs = make_pairs(6)
    pairs = [
        dataclasses.replace(pair, prompt_ids=pairs[i // 2 * 2].prompt_ids) for i, pair in enumerate(pairs)
    ]  # 3 prompts
    reference = tiny_llama(seed=0)
    policy = tiny_llama(seed=1)  # another model: margins are not all 0
    result = heldout_accuracy_by_prompt(policy, pairs, 0, 0.5, reference)
    assert result["mean"] == pytest.approx(heldout_preference_metrics(policy, pairs, 0, 0.5, reference)["accuracy"])
    assert (result["n"], result["n_prompts"]) == (6, 3)
    assert result["low"] <= result["mean"] <= result["high"]
