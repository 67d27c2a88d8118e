"""Answer checks for the notebooks' exercises: call one on your answer to hear whether it is right.

    from dpo_utils.exercises import check
    check("01.2", 0.02)    # prints "Exercise 01.2: right." or "Exercise 01.2: not yet. Hint: ..."

An exercise is a key (notebook.number), a hint, and its expected answer, *computed* from the
notebook's own functions so it is never written down here. An answer is a number, an array or a
tensor (compared with a relative tolerance), or a function, which is called on the exercise's
inputs and compared with the reference function on the same inputs. Each notebook's solution
cells end with ``assert check(key, answer)``, so CI fails on a wrong solution.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from dpo_utils.data import collate_sequences
from dpo_utils.logprobs import sequence_logprobs
from dpo_utils.tabular import kl_divergence, make_problem, optimal_policy


@dataclass(frozen=True)
class Exercise:
    expected: Callable  # no argument: the expected value; with ``inputs``: the reference function
    hint: str
    rtol: float = 1e-4
    inputs: Callable[[], list[tuple]] | None = None  # argument tuples a function answer is called on


EXERCISES: dict[str, Exercise] = {}


def exercise(key: str, hint: str, rtol: float = 1e-4, inputs: Callable[[], list[tuple]] | None = None):
    """Register the decorated function as exercise ``key``'s expected answer (or reference function)."""

    def register(expected: Callable) -> Callable:
        if key in EXERCISES:
            raise ValueError(f"exercise {key} is registered twice")
        EXERCISES[key] = Exercise(expected, hint, rtol, inputs)
        return expected

    return register


def as_array(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=float)


def same(answer, expected, rtol: float) -> bool:
    answer, expected = as_array(answer), as_array(expected)
    return answer.shape == expected.shape and bool(np.allclose(answer, expected, rtol=rtol, atol=rtol * 1e-3))


def is_right(item: Exercise, answer) -> bool:
    if item.inputs is None:
        return same(answer, item.expected(), item.rtol)
    return all(same(answer(*args), item.expected(*args), item.rtol) for args in item.inputs())


def check(key: str, answer) -> bool:
    """Print whether ``answer`` to exercise ``key`` is right (with a hint when it is not); return it."""
    if key not in EXERCISES:
        raise KeyError(f"no exercise {key!r}; the exercises are {sorted(EXERCISES)}")
    item = EXERCISES[key]
    if answer is None or answer is Ellipsis:
        print(f"Exercise {key}: no answer yet. Hint: {item.hint}")
        return False
    try:
        right = is_right(item, answer)
    except Exception as error:  # a reader's function that fails, or an answer of the wrong kind
        print(f"Exercise {key}: your answer raised {type(error).__name__}: {error}. Hint: {item.hint}")
        return False
    print(f"Exercise {key}: right." if right else f"Exercise {key}: not yet. Hint: {item.hint}")
    return right


# Each notebook's exercises, in order. Expected answers are computed, never typed in.

# --- 01 ---


# --- 02 ---


# --- 03 ---


# --- 04 ---


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


# --- end ---
