import torch

from dpo_utils.preferences import (
    center_per_prompt,
    expected_pair_counts,
    fit_rewards,
    pairwise_nll,
    sample_pair_counts,
)
from dpo_utils.tabular import make_problem


def test_counts_have_the_right_total_and_no_self_pairs():
    reward = make_problem(3, 5, seed=1).reward
    counts = sample_pair_counts(reward, 1000, seed=0)
    assert counts.sum().item() == 1000
    assert counts.diagonal(dim1=1, dim2=2).sum().item() == 0


def test_deterministic_mode_always_picks_the_higher_reward():
    reward = make_problem(3, 5, seed=1).reward
    counts = sample_pair_counts(reward, 2000, seed=0, mode="deterministic")
    wrong = counts * (reward[:, :, None] < reward[:, None, :])
    assert wrong.sum().item() == 0


def test_win_rates_follow_bradley_terry():
    reward = torch.tensor([[0.0, 1.0, 2.5]], dtype=torch.float64)
    counts = sample_pair_counts(reward, 60000, seed=0)
    empirical = counts[0, 2, 0] / (counts[0, 2, 0] + counts[0, 0, 2])
    assert abs(empirical.item() - torch.sigmoid(torch.tensor(2.5)).item()) < 0.02


def test_reward_shift_per_prompt_leaves_likelihood_unchanged():
    reward = make_problem(3, 5, seed=2).reward
    counts = sample_pair_counts(reward, 500, seed=0)
    shifted = reward + torch.tensor([[5.0], [-3.0], [0.7]], dtype=torch.float64)
    assert torch.allclose(pairwise_nll(reward, counts), pairwise_nll(shifted, counts))


def test_fit_recovers_true_reward_up_to_a_constant():
    reward = make_problem(2, 4, seed=3).reward
    fitted, history = fit_rewards(expected_pair_counts(reward, 1.0), steps=3000, lr=0.05)
    assert torch.allclose(fitted, center_per_prompt(reward), atol=1e-3)
    assert history[-1] < history[0]
