"""trace_training: evaluations at the traced steps, and a resumed run that ends where a straight one does."""

import copy

import matplotlib
import pytest

from dpo_utils.frontier import plot_frontier, trace_training
from dpo_utils.trainer import DPOConfig, DPOTrainer
from tests.helpers import TinyTokenizer, make_pairs, tiny_llama

matplotlib.use("Agg")


def weight_sum(model):
    return {"weight": model.lm_head.weight.sum().item(), "training": model.training}


def new_trainer(reference, folder=None):
    config = DPOConfig(beta=0.1, learning_rate=1e-2, batch_size=2, max_steps=4, seed=0)
    return DPOTrainer(copy.deepcopy(reference).requires_grad_(True), TinyTokenizer(), make_pairs(), config, folder)


def test_traced_steps_are_evaluated_in_eval_mode_after_that_many_steps():
    reference = tiny_llama().requires_grad_(False)
    trainer = new_trainer(reference)
    traced = trace_training(trainer, [3, 1], weight_sum)
    assert list(traced) == [1, 3] and trainer.step == 3 and not any(t["training"] for t in traced.values())
    by_hand = new_trainer(reference)
    for step in (1, 2, 3):
        by_hand.train_step()
        if step in traced:
            assert weight_sum(by_hand.model)["weight"] == pytest.approx(traced[step]["weight"], abs=1e-6)
    assert traced[1]["weight"] != traced[3]["weight"]


def test_an_interrupted_trace_resumes_and_reuses_its_evaluations(tmp_path, monkeypatch):
    reference = tiny_llama().requires_grad_(False)
    straight = trace_training(new_trainer(reference), [1, 2, 4], weight_sum)
    calls = []

    def crash_after_two(model):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return weight_sum(model)

    with pytest.raises(KeyboardInterrupt):
        trace_training(new_trainer(reference, tmp_path), [1, 2, 4], crash_after_two)
    assert (tmp_path / "trace.json").exists() and (tmp_path / "checkpoint" / "state.pt").exists()
    counted = []
    resumed = trace_training(new_trainer(reference, tmp_path), [1, 2, 4], lambda m: counted.append(1) or weight_sum(m))
    assert len(counted) == 1  # only step 4 was evaluated again
    for step in (1, 2, 4):
        assert resumed[step]["weight"] == pytest.approx(straight[step]["weight"], abs=1e-6)


def test_plot_frontier_draws_one_line_per_method_and_the_bound():
    point = lambda kl, reward: {
        "kl": kl,
        "reward": reward,
        "kl_low": kl - 0.1,
        "kl_high": kl + 0.1,
        "reward_low": reward - 0.1,
        "reward_high": reward + 0.1,
    }
    fig = plot_frontier({"A": [point(0, 0), point(1, 0.3)], "B": [point(0.5, 0.2)]}, bound=([0, 0.6], [0, 0.4]))
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels == ["A", "B", "best-of-N at log N - (N-1)/N"]
