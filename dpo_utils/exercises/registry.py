"""The machinery of the answer checks: an exercise is a key (notebook.number), a hint and its expected
answer, registered with :func:`exercise`; :func:`check` compares a reader's answer with it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


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
