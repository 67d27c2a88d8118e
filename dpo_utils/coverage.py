r"""Who wrote the responses: off-policy and on-policy preference pairs in the tabular world.

Pairs are counts ``C[p, w, l]`` as in :mod:`dpo_utils.preferences`, but the two responses of a
pair are drawn from a *writer* policy: another model (off-policy), or the policy being trained
(on-policy). A writer that never produces some responses leaves them out of every pair, and
the DPO loss then says nothing about them: with :math:`h(y) = \log\pi(y|x)/\pi_{ref}(y|x)` it
depends only on differences :math:`h(y_w) - h(y_l)` of *covered* responses, so adding one
constant to the logits of all covered responses of a prompt changes the mass on the uncovered
ones without changing the loss.
"""

from __future__ import annotations

import torch

from dpo_utils.tabular import (
    TabularProblem,
    expected_reward,
    frontier_reward_at_kl,
    kl_divergence,
    tabular_dpo_loss,
    total_variation,
)


def uniform_on(covered: torch.Tensor) -> torch.Tensor:
    """A writer policy spreading each prompt's mass evenly over its ``covered`` (bool) responses."""
    if not covered.any(-1).all():
        raise ValueError("every prompt needs at least one covered response")
    weights = covered.double()
    return weights / weights.sum(-1, keepdim=True)


def sample_pairs_from(writer: torch.Tensor, reward: torch.Tensor, n_pairs: int, seed: int = 0) -> torch.Tensor:
    """Counts ``C[p, w, l]`` of ``n_pairs`` draws: a uniform prompt, two responses from ``writer``.

    The label follows Bradley–Terry, :math:`P(a \\succ b) = \\sigma(r_a - r_b)`. Draws of the same
    response twice carry no preference (their DPO gradient is zero) and are dropped, so the
    counts may sum to fewer than ``n_pairs``.
    """
    gen = torch.Generator().manual_seed(seed)
    n_prompts, n_responses = writer.shape
    prompt = torch.randint(n_prompts, (n_pairs,), generator=gen)
    a = torch.multinomial(writer[prompt], 1, generator=gen).squeeze(-1)
    b = torch.multinomial(writer[prompt], 1, generator=gen).squeeze(-1)
    a_wins = torch.rand(n_pairs, generator=gen, dtype=torch.float64) < torch.sigmoid(
        reward[prompt, a] - reward[prompt, b]
    )
    keep = a != b
    prompt, winner, loser = prompt[keep], torch.where(a_wins, a, b)[keep], torch.where(a_wins, b, a)[keep]
    counts = torch.zeros(n_prompts, n_responses, n_responses, dtype=torch.float64)
    counts.index_put_((prompt, winner, loser), torch.ones(len(prompt), dtype=torch.float64), accumulate=True)
    return counts


def mentioned(counts: torch.Tensor) -> torch.Tensor:
    """Bool ``(n_prompts, n_responses)``: the responses that appear in at least one pair."""
    return (counts.sum(-1) + counts.sum(-2)) > 0


def train_table(
    init: torch.Tensor, ref_probs: torch.Tensor, counts: torch.Tensor, beta: float, steps: int = 2000, lr: float = 0.05
) -> torch.Tensor:
    """DPO on ``counts`` with full-batch Adam from the policy ``init`` (probabilities), reference fixed.

    Like :func:`dpo_utils.tabular.train_tabular_dpo`, but the start need not be the reference:
    later rounds of on-policy DPO, or DPO after an SFT step, start elsewhere.
    """
    logits = torch.log(init).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        tabular_dpo_loss(logits, ref_probs, counts, beta).backward()
        optimizer.step()
    return torch.softmax(logits.detach(), dim=-1)


def sft_on_chosen(init: torch.Tensor, counts: torch.Tensor, steps: int = 100, lr: float = 0.05) -> torch.Tensor:
    """Preferred-FT: maximise the log-likelihood of the chosen responses (Adam, from ``init``)."""
    chosen = counts.sum(-1)  # how often each response won
    logits = torch.log(init).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        (-(chosen * torch.log_softmax(logits, dim=-1)).sum() / chosen.sum()).backward()
        optimizer.step()
    return torch.softmax(logits.detach(), dim=-1)


def shift_covered(policy: torch.Tensor, covered: torch.Tensor, log_factor: float) -> torch.Tensor:
    """Multiply the covered responses' probabilities by ``exp(log_factor)`` and renormalise.

    Ratios among covered responses are kept, so pairs of covered responses keep their DPO loss
    exactly; only the mass on uncovered responses changes.
    """
    logits = torch.log(policy) + log_factor * covered.double()
    return torch.softmax(logits, dim=-1)


def on_policy_rounds(
    problem: TabularProblem,
    start: torch.Tensor,
    beta: float,
    rounds: int,
    pairs_per_round: int,
    steps: int = 1000,
    lr: float = 0.05,
    seed: int = 0,
) -> list[torch.Tensor]:
    """Iterative DPO: each round draws fresh pairs from the current policy and trains on them from there.

    The reference stays ``problem.ref_probs`` in every round. Returns the policy after each round.
    """
    policy, policies = start, []
    for round_index in range(rounds):
        counts = sample_pairs_from(policy, problem.reward, pairs_per_round, seed=seed + round_index)
        policy = train_table(policy, problem.ref_probs, counts, beta, steps, lr)
        policies.append(policy)
    return policies


def coverage_summary(
    problem: TabularProblem, policy: torch.Tensor, pi_star: torch.Tensor, covered: torch.Tensor
) -> dict:
    """Reward, KL, the frontier's reward at that KL, TV to ``pi_star`` and mass off ``covered``."""
    kl = kl_divergence(policy, problem.ref_probs).item()
    return {
        "reward": expected_reward(policy, problem.reward).item(),
        "kl": kl,
        "frontier": frontier_reward_at_kl(problem, kl),
        "tv": total_variation(policy, pi_star).item(),
        "uncovered": (policy * ~covered).sum(-1).mean().item(),
    }
