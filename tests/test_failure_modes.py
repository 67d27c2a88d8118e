"""The two failures notebook 10 reproduces: a moving reference keeps the loss at log 2 while the policy
drifts, by the same amount at every beta; likelihood displacement sends the mass along f_chosen - f_rejected."""

import math

import torch

from dpo_utils.failure_modes import DISPLACEMENT_FEATURES, moving_reference_dpo, train_log_linear
from dpo_utils.preferences import expected_pair_counts
from dpo_utils.tabular import kl_divergence, make_problem, optimal_policy


def test_a_moving_reference_logs_log_2_while_the_policy_drifts_past_the_optimum():
    problem = make_problem(seed=0)
    counts = expected_pair_counts(problem.reward)
    policy, trace = moving_reference_dpo(problem, counts, beta=0.5, steps=200)
    assert all(abs(loss - math.log(2)) < 1e-9 for loss, _ in trace)
    optimum_kl = kl_divergence(optimal_policy(problem.ref_probs, problem.reward, 0.5), problem.ref_probs).item()
    assert trace[-1][1] > 2 * optimum_kl
    assert abs(kl_divergence(policy, problem.ref_probs).item() - trace[-1][1]) < 1e-12


def test_adam_cancels_beta_under_a_moving_reference():
    problem = make_problem(seed=0)
    counts = expected_pair_counts(problem.reward)
    kls = [moving_reference_dpo(problem, counts, beta, steps=100)[1][-1][1] for beta in (0.1, 2.0)]
    assert abs(kls[0] - kls[1]) < 1e-4 * kls[0]


def test_displacement_moves_the_mass_to_the_largest_projection_on_chosen_minus_rejected():
    plain, with_nll = train_log_linear(), train_log_linear(nll_weight=1.0)
    assert plain[-1].argmax().item() == 2  # unseen A: 1.0 * 0.4 beats chosen's 0.2 * 0.4
    assert plain[0, 0] > plain[-1, 0] and with_nll[-1].argmax().item() == 0
    features = DISPLACEMENT_FEATURES.clone()
    features[2] = torch.tensor([0.0, 0.1])
    assert train_log_linear(features, steps=1000)[-1].argmax().item() == 0
