"""The tabular coverage claims of notebook 11, on the notebook's fixed seed."""

import torch

from dpo_utils.coverage import (
    coverage_summary,
    mentioned,
    on_policy_rounds,
    sample_pairs_from,
    sft_on_chosen,
    shift_covered,
    train_table,
    uniform_on,
)
from dpo_utils.tabular import make_problem, optimal_policy, tabular_dpo_loss

PROBLEM, BETA = make_problem(4, 6, seed=0), 0.5
PI_STAR = optimal_policy(PROBLEM.ref_probs, PROBLEM.reward, BETA)
COVERED = torch.zeros(4, 6, dtype=torch.bool)
COVERED[:, :3] = True
OFF = sample_pairs_from(uniform_on(COVERED), PROBLEM.reward, 30_000, seed=1)


def test_a_writer_only_produces_pairs_inside_its_support_and_labels_follow_bradley_terry():
    assert torch.equal(mentioned(OFF), COVERED)
    counts = sample_pairs_from(PROBLEM.ref_probs, PROBLEM.reward, 200_000, seed=2)
    a, b = 3, 5  # the two most likely responses of prompt 0
    win = counts[0, a, b] / (counts[0, a, b] + counts[0, b, a])
    assert abs(win - torch.sigmoid(PROBLEM.reward[0, a] - PROBLEM.reward[0, b])) < 0.02
    assert counts.diagonal(dim1=1, dim2=2).sum() == 0


def test_uncovered_responses_get_no_gradient_and_moving_their_mass_keeps_the_loss():
    logits = torch.log(PROBLEM.ref_probs).clone().requires_grad_(True)
    tabular_dpo_loss(logits, PROBLEM.ref_probs, OFF, BETA).backward()
    assert logits.grad[~COVERED].abs().max() < 1e-15 and logits.grad[COVERED].abs().max() > 1e-3
    trained = train_table(PROBLEM.ref_probs, PROBLEM.ref_probs, OFF, BETA, steps=1500)
    loss = lambda policy: tabular_dpo_loss(torch.log(policy), PROBLEM.ref_probs, OFF, BETA).item()
    for shift in (-3.0, 3.0):
        moved = shift_covered(trained, COVERED, shift)
        assert abs(loss(moved) - loss(trained)) < 1e-12  # many minimisers ...
        assert (
            abs(
                coverage_summary(PROBLEM, moved, PI_STAR, COVERED)["uncovered"]
                - coverage_summary(PROBLEM, trained, PI_STAR, COVERED)["uncovered"]
            )
            > 0.3
        )  # ... far apart


def test_off_policy_dpo_misses_pi_star_and_on_policy_rounds_reach_it():
    off = coverage_summary(
        PROBLEM, train_table(PROBLEM.ref_probs, PROBLEM.ref_probs, OFF, BETA, steps=1500), PI_STAR, COVERED
    )
    assert off["tv"] > 0.25 and off["frontier"] - off["reward"] > 0.1
    last = on_policy_rounds(PROBLEM, PROBLEM.ref_probs, BETA, rounds=2, pairs_per_round=20_000, steps=800, seed=10)[-1]
    on = coverage_summary(PROBLEM, last, PI_STAR, COVERED)
    assert on["tv"] < 0.08 and on["frontier"] - on["reward"] < 0.02


def test_sft_first_empties_the_uncovered_responses_and_dpo_then_lands_near_the_sft_models_pi_star():
    sft = sft_on_chosen(PROBLEM.ref_probs, OFF, steps=100)
    assert coverage_summary(PROBLEM, sft, PI_STAR, COVERED)["uncovered"] < 0.05
    after = train_table(sft, sft, OFF, BETA, steps=1500)
    target = optimal_policy(sft, PROBLEM.reward, BETA)
    assert coverage_summary(PROBLEM, after, target, COVERED)["tv"] < 0.05
    assert coverage_summary(PROBLEM, after, PI_STAR, COVERED)["tv"] > 0.5  # but not the reference's pi*
