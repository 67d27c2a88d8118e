"""The exercises of notebooks 01-06 (the theory half): expected answers computed from the notebooks' own
functions, never typed in."""

from __future__ import annotations

import math

import numpy as np
import torch

from dpo_utils import regression as reg
from dpo_utils.data import collate_sequences
from dpo_utils.exercises.registry import exercise
from dpo_utils.logprobs import sequence_logprobs
from dpo_utils.preferences import (
    bradley_terry_probability,
    expected_pair_counts,
    pairwise_nll,
    sample_pair_counts,
)
from dpo_utils.tabular import (
    kl_divergence,
    kl_objective,
    log_partition,
    make_problem,
    optimal_policy,
    tabular_dpo_loss,
)

# --- 01 ---


@exercise("01.1", hint="With the mean loss the gradient is the mean of (theta - y_i), not their sum.")
def _expected_01_1():
    x, y = np.ones((2, 1)), np.array([[2.0], [3.0]])  # the two-sample example: x_i = 1
    return reg.gradient_descent(1.0, x, y, lr=0.5, steps=1)[0][-1]


@exercise("01.2", hint="Summing multiplies the loss, its gradient and its curvature by the number of samples.")
def _expected_01_2():
    x, _ = reg.make_data(n=100, seed=0)
    return reg.max_stable_lr(x) / len(x)  # a step alpha on the summed loss is a step n * alpha on the mean


@exercise(
    "01.3",
    hint="After one step theta - theta* is (1 - lr * mean(x^2)) times what it was; apply that t times.",
    inputs=lambda: [(0.5, 0.1, 10), (0.0, 1.9, 7), (2.0, 0.5, 3), (0.5, 2.1, 5), (-1.0, 1.0, 1)],
)
def _expected_01_3(theta0, lr, t):
    x, y = reg.make_data(n=100, seed=0)
    return reg.gradient_descent(theta0, x, y, lr=lr, steps=t)[0][-1]


# --- 02 ---


@exercise("02.1", hint="Write L(theta + h) and L(theta - h) as Taylor series: which powers of h survive?")
def _expected_02_1():
    x, y = reg.make_data(n=100, seed=0)
    return reg.mse_gradient(0.5, x, y)


@exercise(
    "02.2",
    hint="Put u = beta * z: the derivative of -log sigma(u) is -sigma(-u), times du/dz.",
    inputs=lambda: [(2.0, 0.1), (-1.0, 0.5), (0.0, 1.0), (4.0, 2.0), (-3.0, 10.0)],
)
def _expected_02_2(z, beta):
    z = torch.tensor(float(z), dtype=torch.float64, requires_grad=True)
    (-torch.nn.functional.logsigmoid(beta * z)).backward()
    return z.grad.item()


@exercise(
    "02.3",
    hint="One chain rule per parameter: d(y_hat)/d(theta) = x_i and d(y_hat)/d(b) = 1.",
    inputs=lambda: [(0.5, 0.0), (1.0, 0.3), (-0.2, 1.5)],
)
def _expected_02_3(theta, b):
    x, y = (torch.from_numpy(a) for a in reg.make_data(n=100, seed=0))
    params = torch.tensor([theta, b], dtype=torch.float64, requires_grad=True)
    (0.5 * torch.mean((params[0] * x + params[1] - y) ** 2)).backward()
    return params.grad.numpy()


# --- 03 ---


def _reward_03() -> torch.Tensor:
    """Notebook 03's true reward table: 3 prompts, 5 responses."""
    return make_problem(n_prompts=3, n_responses=5, seed=0).reward


@exercise("03.1", hint="Only two numbers of the reward table matter: the rewards of responses 1 and 4 in row 1.")
def _expected_03_1():
    reward = _reward_03()
    return bradley_terry_probability(reward[1, 1], reward[1, 4])


def _differences_03() -> torch.Tensor:
    return torch.linspace(-4.0, 4.0, 9, dtype=torch.float64)


@exercise(
    "03.2",
    hint="A label survives with probability 1 - noise and is flipped with probability noise; "
    "a flipped label means the other response won.",
    inputs=lambda: [(_differences_03(), 0.0), (_differences_03(), 0.1), (_differences_03(), 0.3)],
)
def _expected_03_2(d, noise):
    zero = torch.zeros_like(d)
    return (1 - noise) * bradley_terry_probability(d, zero) + noise * bradley_terry_probability(zero, d)


def _inputs_03_3() -> list[tuple]:
    reward = _reward_03()
    scores = torch.randn(reward.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    return [
        (torch.zeros_like(reward), sample_pair_counts(reward, 1000, seed=5)),
        (scores, expected_pair_counts(reward)),
        (reward, sample_pair_counts(reward, 1000, seed=6, mode="deterministic")),
    ]


@exercise(
    "03.3",
    hint="Differentiate log sigma(s_w - s_l) with respect to s_w and to s_l (its derivative is sigma(s_l - s_w)), "
    "weight by the counts, and divide by the number of pairs.",
    inputs=_inputs_03_3,
)
def _expected_03_3(scores, counts):
    scores = scores.detach().clone().requires_grad_(True)
    pairwise_nll(scores, counts).backward()
    return scores.grad


# --- 04 ---


def _problem_04():
    """Notebook 04's reference policy, true reward and beta."""
    problem = make_problem(n_prompts=3, n_responses=5, seed=0)
    return problem.ref_probs, problem.reward, 0.5


@exercise("04.1", hint="Write log Z(x) as a log-sum-exp and take the constant out of every exponent.")
def _expected_04_1():
    ref, reward, beta = _problem_04()
    shifted = reward.clone()
    shifted[0] += 3.0
    return log_partition(ref, shifted, beta)[0] - log_partition(ref, reward, beta)[0]


@exercise(
    "04.2", hint="Evaluate the identity of step 2 at pi_ref and at pi*: the beta log Z term is the same in both."
)
def _expected_04_2():
    ref, reward, beta = _problem_04()
    return kl_objective(optimal_policy(ref, reward, beta), ref, reward, beta) - kl_objective(ref, ref, reward, beta)


def _inputs_04_3() -> list[tuple]:
    ref, reward, beta = _problem_04()
    return [
        (expected_pair_counts(reward), beta),
        (sample_pair_counts(reward, 500, seed=1), 0.1),
        (sample_pair_counts(reward, 500, seed=2, mode="deterministic"), 2.0),
    ]


@exercise(
    "04.3",
    hint="What is every pair's weight when pi_theta = pi_ref? For a softmax, d log pi(y) / d logits = e_y - pi.",
    inputs=_inputs_04_3,
)
def _expected_04_3(counts, beta):
    ref, _, _ = _problem_04()
    logits = torch.log(ref).clone().requires_grad_(True)
    tabular_dpo_loss(logits, ref, counts, beta).backward()
    return logits.grad


# --- 05 ---


def tabular_problem():
    """Notebook 05's problem: 4 prompts, 6 responses, seed 0."""
    return make_problem(n_prompts=4, n_responses=6, seed=0)


def beta_for_kl(problem, kl: float, iterations: int = 100) -> float:
    """The beta whose closed-form optimum sits ``kl`` nats from the reference (bisection on log beta;
    the KL falls as beta grows)."""
    low, high = math.log(1e-3), math.log(1e3)
    for _ in range(iterations):
        middle = (low + high) / 2
        policy = optimal_policy(problem.ref_probs, problem.reward, math.exp(middle))
        low, high = (middle, high) if kl_divergence(policy, problem.ref_probs) > kl else (low, middle)
    return math.exp((low + high) / 2)


@exercise("05.1", hint="weight each reference probability by exp(r / beta), then divide by the sum of the weights")
def _expected_05_1():
    problem = tabular_problem()
    return optimal_policy(problem.ref_probs, problem.reward, 1.0)[0]


@exercise(
    "05.2",
    hint="where does all the probability go when every observed pair pushes its winner up without limit? "
    "A policy that puts all its mass on response y is -log pi_ref(y|x) nats from the reference",
)
def _expected_05_2():
    problem = tabular_problem()
    greedy = torch.nn.functional.one_hot(problem.reward.argmax(-1), problem.reward.shape[-1]).double()
    return kl_divergence(greedy, problem.ref_probs)


@exercise("05.3", hint="the KL of pi*_beta falls as beta grows: bisect on log beta between 1e-3 and 1e3")
def _expected_05_3():
    return beta_for_kl(tabular_problem(), 1.0)


# --- 06 ---


def two_sequence_batch(padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Notebook 06's exercise batch: a 4-token prompt, 3-token completion; a 2-token prompt, 6-token completion."""
    return collate_sequences([([5, 6, 7, 8], [9, 10, 11]), ([5, 6], [12, 13, 14, 15, 16, 17])], 0, padding_side)


@exercise("06.1", hint="the logits at t score the token at t+1: shift the completion mask left by one")
def _expected_06_1():
    mask = two_sequence_batch()["completion_mask"]
    return torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)


def _random_logits_batches() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(6)
    cases = []
    for side in ("right", "left"):
        batch = two_sequence_batch(side)
        logits = torch.randn(*batch["input_ids"].shape, 20, generator=generator)
        cases.append((logits, batch["input_ids"], batch["completion_mask"]))
    return cases


@exercise(
    "06.2",
    hint="drop the last position of the logits and the first of the labels and of the mask; log_softmax over the "
    "vocabulary, gather each label's entry, multiply by the mask and sum over positions",
    inputs=_random_logits_batches,
)
def _expected_06_2(logits, labels, completion_mask):
    return sequence_logprobs(logits, labels, completion_mask)
