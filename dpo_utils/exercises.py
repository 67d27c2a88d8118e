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

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from dpo_utils import regression as reg


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


class Verdict:
    """What :func:`check` returns: true when the answer is right. A notebook shows only the printed line."""

    def __init__(self, right: bool):
        self.right = right

    def __bool__(self) -> bool:
        return self.right

    def __repr__(self) -> str:
        return f"Verdict(right={self.right})"

    def _ipython_display_(self) -> None:  # the printed line says it all
        pass


def check(key: str, answer) -> Verdict:
    """Print whether ``answer`` to exercise ``key`` is right (with a hint when it is not); a true
    :class:`Verdict` when it is."""
    if key not in EXERCISES:
        raise KeyError(f"no exercise {key!r}; the exercises are {sorted(EXERCISES)}")
    item = EXERCISES[key]
    if answer is None or answer is Ellipsis:
        print(f"Exercise {key}: no answer yet. Hint: {item.hint}")
        return Verdict(False)
    try:
        right = is_right(item, answer)
    except Exception as error:  # a reader's function that fails, or an answer of the wrong kind
        print(f"Exercise {key}: your answer raised {type(error).__name__}: {error}. Hint: {item.hint}")
        return Verdict(False)
    print(f"Exercise {key}: right." if right else f"Exercise {key}: not yet. Hint: {item.hint}")
    return Verdict(right)


# Each notebook's exercises, in order. Expected answers are computed, never typed in.

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


# --- 04 ---


# --- 05 ---


# --- 06 ---


# --- end ---
