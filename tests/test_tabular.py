import torch

from dpo_utils.preferences import expected_pair_counts, sample_pair_counts
from dpo_utils.tabular import (
    kl_divergence,
    kl_objective,
    log_partition,
    make_problem,
    optimal_policy,
    total_variation,
    train_tabular_dpo,
)


def test_closed_form_optimum_maximises_the_kl_objective():
    pb, beta = make_problem(3, 5, seed=0), 0.7
    best = kl_objective(optimal_policy(pb.ref_probs, pb.reward, beta), pb.ref_probs, pb.reward, beta)
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        other = torch.softmax(torch.randn(3, 5, generator=gen, dtype=torch.float64) * 2, dim=-1)
        assert kl_objective(other, pb.ref_probs, pb.reward, beta) < best
    # and gradient ascent on the objective finds the same policy
    logits = torch.zeros(3, 5, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.05)
    for _ in range(3000):
        opt.zero_grad()
        (-kl_objective(torch.softmax(logits, -1), pb.ref_probs, pb.reward, beta)).backward()
        opt.step()
    assert total_variation(torch.softmax(logits, -1), optimal_policy(pb.ref_probs, pb.reward, beta)) < 1e-4


def test_reward_is_recovered_from_the_optimal_policy():
    pb, beta = make_problem(2, 4, seed=1), 0.3
    pi_star = optimal_policy(pb.ref_probs, pb.reward, beta)
    rebuilt = beta * torch.log(pi_star / pb.ref_probs) + beta * log_partition(pb.ref_probs, pb.reward, beta)[:, None]
    assert torch.allclose(rebuilt, pb.reward, atol=1e-10)


def test_dpo_on_infinite_data_lands_on_pi_star():
    pb, beta = make_problem(4, 6, seed=0), 0.5
    policy, _ = train_tabular_dpo(pb, expected_pair_counts(pb.reward), beta, steps=3000, lr=0.05)
    assert total_variation(policy, optimal_policy(pb.ref_probs, pb.reward, beta)) < 1e-3


def test_dpo_on_sampled_pairs_gets_close_to_pi_star():
    pb, beta = make_problem(4, 6, seed=0), 0.5
    counts = sample_pair_counts(pb.reward, 100_000, seed=1)
    policy, _ = train_tabular_dpo(pb, counts, beta, steps=3000, lr=0.05)
    assert total_variation(policy, optimal_policy(pb.ref_probs, pb.reward, beta)) < 0.02


def test_deterministic_preferences_make_dpo_greedy_but_ipo_stays_bounded():
    pb, beta = make_problem(4, 6, seed=0), 0.5
    counts = sample_pair_counts(pb.reward, 3000, seed=1, mode="deterministic")
    dpo, _ = train_tabular_dpo(pb, counts, beta, steps=2000, lr=0.05)
    ipo, _ = train_tabular_dpo(pb, counts, beta, steps=2000, lr=0.05, loss_type="ipo")
    assert dpo.max(-1).values.min() > 0.99  # every prompt collapses onto one response
    assert kl_divergence(ipo, pb.ref_probs) < 0.5 * kl_divergence(dpo, pb.ref_probs)


def test_frontier_reward_at_kl_recovers_pi_star_and_bounds_other_policies():
    from dpo_utils.tabular import expected_reward, frontier_reward_at_kl

    pb = make_problem(seed=0)
    for beta in (0.2, 1.0, 4.0):
        pi = optimal_policy(pb.ref_probs, pb.reward, beta)
        assert (
            abs(
                frontier_reward_at_kl(pb, kl_divergence(pi, pb.ref_probs).item())
                - expected_reward(pi, pb.reward).item()
            )
            < 1e-6
        )
    gen = torch.Generator().manual_seed(3)
    for _ in range(50):  # no policy beats the frontier at its own KL
        other = torch.softmax(torch.log(pb.ref_probs) + torch.randn(4, 6, generator=gen, dtype=torch.float64), -1)
        assert (
            expected_reward(other, pb.reward).item()
            <= frontier_reward_at_kl(pb, kl_divergence(other, pb.ref_probs).item()) + 1e-9
        )
