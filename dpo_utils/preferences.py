r"""Pairwise preferences and the Bradley–Terry model.

Bradley–Terry: a response with reward :math:`r_a` beats one with reward :math:`r_b` with
probability

.. math::
    P(a \succ b \mid x) = \sigma\big(r(x, a) - r(x, b)\big).

Fitting a reward model means minimising the negative log-likelihood of observed winners,
:math:`-\frac1N\sum_i \log\sigma(r(x_i, y_{w,i}) - r(x_i, y_{l,i}))`: the logistic loss on
reward differences. Only differences enter, so :math:`r(x, y) + c(x)` fits exactly as well as
:math:`r(x, y)`: rewards are identified only up to a per-prompt constant.

Pairs are kept as counts ``C[p, w, l]`` (how often response ``w`` beat ``l`` on prompt ``p``),
so a loss over a million pairs costs the same as one over a hundred.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_probability(reward_a: torch.Tensor, reward_b: torch.Tensor) -> torch.Tensor:
    """:math:`P(a \\succ b) = \\sigma(r_a - r_b)`."""
    return torch.sigmoid(reward_a - reward_b)


def sample_pair_counts(
    reward: torch.Tensor,
    n_pairs: int,
    seed: int = 0,
    mode: str = "bradley_terry",
    label_noise: float = 0.0,
) -> torch.Tensor:
    """Sample ``n_pairs`` labelled comparisons and return counts ``C[p, w, l]``.

    Each pair draws a prompt uniformly and two distinct responses uniformly, then a winner:

    - ``mode="bradley_terry"``: the first wins with probability :math:`\\sigma(r_a - r_b)`;
    - ``mode="deterministic"``: the higher-reward response always wins.

    ``label_noise`` then flips each label with that probability (annotator mistakes).
    """
    if mode not in ("bradley_terry", "deterministic"):
        raise ValueError(f"mode={mode!r}: use 'bradley_terry' or 'deterministic'")
    n_prompts, n_responses = reward.shape
    gen = torch.Generator().manual_seed(seed)
    prompt = torch.randint(n_prompts, (n_pairs,), generator=gen)
    a = torch.randint(n_responses, (n_pairs,), generator=gen)
    b = (a + torch.randint(1, n_responses, (n_pairs,), generator=gen)) % n_responses  # b != a
    diff = reward[prompt, a] - reward[prompt, b]
    if mode == "bradley_terry":
        a_wins = torch.rand(n_pairs, generator=gen) < torch.sigmoid(diff)
    else:
        a_wins = diff > 0
    flip = torch.rand(n_pairs, generator=gen) < label_noise
    a_wins = a_wins ^ flip
    winner, loser = torch.where(a_wins, a, b), torch.where(a_wins, b, a)
    counts = torch.zeros(n_prompts, n_responses, n_responses, dtype=torch.float64)
    counts.index_put_((prompt, winner, loser), torch.ones(n_pairs, dtype=torch.float64), accumulate=True)
    return counts


def expected_pair_counts(reward: torch.Tensor, n_pairs: float = 1.0) -> torch.Tensor:
    """The infinite-data limit of :func:`sample_pair_counts` (Bradley–Terry mode), as fractional counts."""
    n_prompts, n_responses = reward.shape
    per_ordered_pair = n_pairs / (n_prompts * n_responses * (n_responses - 1))
    # pair {a, b} is drawn as (a, b) or (b, a); either way a wins with sigma(r_a - r_b)
    win = torch.sigmoid(reward[:, :, None] - reward[:, None, :]).double()
    counts = 2 * per_ordered_pair * win
    counts.diagonal(dim1=1, dim2=2).zero_()
    return counts


def pairwise_nll(scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mean Bradley–Terry negative log-likelihood of ``counts`` under ``scores[p, y]``."""
    diff = scores[:, :, None] - scores[:, None, :]
    return -(counts * F.logsigmoid(diff)).sum() / counts.sum()


def fit_rewards(counts: torch.Tensor, steps: int = 2000, lr: float = 0.05) -> tuple[torch.Tensor, list[float]]:
    """Fit a tabular reward ``r[p, y]`` by minimising :func:`pairwise_nll` with Adam from zero.

    Returns the fitted rewards, centred per prompt (the identifiable part), and the loss history.
    """
    n_prompts, n_responses, _ = counts.shape
    scores = torch.zeros(n_prompts, n_responses, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([scores], lr=lr)
    history = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = pairwise_nll(scores, counts)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return center_per_prompt(scores.detach()), history


def center_per_prompt(values: torch.Tensor) -> torch.Tensor:
    """Subtract each prompt's mean over responses: removes the unidentifiable constant."""
    return values - values.mean(dim=-1, keepdim=True)
