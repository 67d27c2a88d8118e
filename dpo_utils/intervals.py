"""Uncertainty whose unit is the prompt.

Samples of one prompt are not independent: a prompt that suits a model tends to score high in all
of its samples. With 300 samples from 12 prompts there are 12 independent units, not 300, so

- a **standard error** is the spread of the per-prompt means, over the square root of the number
  of prompts (:func:`prompt_standard_error`);
- an **interval** comes from a bootstrap over prompts: draw the prompts with replacement, keep each
  drawn prompt's values, recompute the statistic, and take the central share of the draws
  (:func:`mean_with_prompt_interval`);
- a **comparison** of two models evaluated on the same prompts is a *paired* bootstrap: each draw
  takes both models' values of the drawn prompts, so what the prompts share cancels in the
  difference (:func:`paired_difference`). Its interval either excludes zero (the models are
  separated) or it does not (they are not separated).
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence


def group_by_prompt(values, prompts) -> dict[str, list[float]]:
    """``{prompt key: [values of that prompt]}``, prompts in order of first appearance; keys are ``repr``."""
    values, prompts = [float(v) for v in values], list(prompts)
    if not values or len(values) != len(prompts):
        raise ValueError(
            f"need one prompt per value and at least one value: got {len(values)} values, {len(prompts)} prompts"
        )
    groups: dict[str, list[float]] = {}
    for prompt, value in zip(prompts, values):
        groups.setdefault(repr(prompt), []).append(value)
    return groups


def pooled_mean(groups: Sequence[Sequence[float]]) -> float:
    """Mean of all values of the given groups (a prompt drawn twice counts twice)."""
    return sum(map(sum, groups)) / sum(map(len, groups))


def bootstrap_over_prompts(
    groups: Sequence, statistic: Callable[[list], float], level: float, n_bootstrap: int, seed: int
) -> tuple[float, float]:
    """Central ``level`` interval of ``statistic`` over ``n_bootstrap`` draws of the groups with replacement."""
    rng = random.Random(seed)
    draws = sorted(statistic(rng.choices(groups, k=len(groups))) for _ in range(n_bootstrap))
    tail = (1 - level) / 2
    return draws[int(tail * n_bootstrap)], draws[min(int((1 - tail) * n_bootstrap), n_bootstrap - 1)]


def prompt_standard_error(values, prompts) -> float:
    """Standard error of the mean with the prompt as the unit: stdev of per-prompt means / sqrt(prompts).

    With the same number of samples per prompt the mean of the per-prompt means is the plain mean, so
    this is its standard error; ``nan`` with fewer than two prompts."""
    means = [statistics.fmean(group) for group in group_by_prompt(values, prompts).values()]
    return statistics.stdev(means) / len(means) ** 0.5 if len(means) > 1 else float("nan")


def mean_with_prompt_interval(values, prompts, level: float = 0.95, n_bootstrap: int = 4000, seed: int = 0) -> dict:
    """Mean of per-item ``values`` with a bootstrap interval **over prompts**: ``prompts`` gives each
    item's prompt (any hashable or repr-able key), and items of one prompt are drawn together.

    Returns ``mean``, ``low``, ``high``, ``n`` (items) and ``n_prompts``.
    """
    groups = list(group_by_prompt(values, prompts).values())
    low, high = bootstrap_over_prompts(groups, pooled_mean, level, n_bootstrap, seed)
    n = sum(map(len, groups))
    return {"mean": pooled_mean(groups), "low": low, "high": high, "n": n, "n_prompts": len(groups)}


def paired_difference(
    values_a, prompts_a, values_b, prompts_b, level: float = 0.95, n_bootstrap: int = 4000, seed: int = 0
) -> dict:
    """Mean of ``values_a`` minus mean of ``values_b``, two models measured on the **same prompts**,
    with a paired bootstrap over prompts (each draw keeps both models' values of a drawn prompt).

    Returns ``difference``, ``low``, ``high``, ``n_prompts``, ``level`` and ``separated``: True when the
    interval excludes zero. A difference whose interval includes zero is "not separated".
    """
    a, b = group_by_prompt(values_a, prompts_a), group_by_prompt(values_b, prompts_b)
    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))[:3]
        raise ValueError(f"a paired comparison needs the same prompts on both sides; prompts on one side only: {only}")
    pairs = [(a[key], b[key]) for key in a]

    def difference(drawn: list) -> float:
        return pooled_mean([x for x, _ in drawn]) - pooled_mean([y for _, y in drawn])

    low, high = bootstrap_over_prompts(pairs, difference, level, n_bootstrap, seed)
    return {
        "difference": difference(pairs),
        "low": low,
        "high": high,
        "n_prompts": len(pairs),
        "level": level,
        "separated": low > 0 or high < 0,
    }


def describe_difference(result: dict, digits: int = 3) -> str:
    """One line for a :func:`paired_difference` result, with the verdict the interval allows."""
    verdict = "separated" if result["separated"] else "not separated: the interval includes 0"
    return (
        f"{result['difference']:+.{digits}f} ({result['level']:.0%} paired interval over "
        f"{result['n_prompts']} prompts: {result['low']:+.{digits}f} to {result['high']:+.{digits}f}; {verdict})"
    )


def summary_over_prompts(name: str, values, prompts) -> dict:
    """``name``, ``name_sem``, ``name_low`` and ``name_high``: the mean of ``values`` with its standard
    error and 95% bootstrap interval over prompts, the keys of an evaluation result."""
    interval = mean_with_prompt_interval(values, prompts)
    return {
        name: interval["mean"],
        f"{name}_sem": prompt_standard_error(values, prompts),
        f"{name}_low": interval["low"],
        f"{name}_high": interval["high"],
    }
