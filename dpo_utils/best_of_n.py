"""Best-of-N from the reference: the baseline that needs no training.

Sample N completions from :math:`\\pi_{ref}`, keep the one the reward scores highest. Its KL to the
reference does not depend on the reward's values, only on their order: with no ties,

.. math::
    \\mathrm{KL}(\\pi_{BoN}\\,\\|\\,\\pi_{ref}) = \\log N - \\frac{N-1}{N},

and ties (many texts with the same score) only lower it, so the formula is an upper bound
(Beirami et al. 2024). Both are computed here from m reference samples per prompt:

- :func:`expected_best`: the mean of the best of N samples drawn at random from the m, an
  unbiased estimate of best-of-N's expected reward for any N <= m;
- :func:`best_of_n_kl`: the closed form where a prompt's m rewards are distinct, and where they tie,
  the closed form lowered by the share the ties take off. That share is measured on the samples:
  :func:`empirical_kl` of the tied rewards over that of m distinct ones. (The empirical KL alone is
  biased low by the finite m even without ties: 1.79 against 1.84 nats at m = N = 16; the ratio
  cancels that bias.)

:func:`best_of_n_results` gives one result per N in :func:`dpo_utils.evaluation.evaluate_policy`'s
format, one value per prompt, so best-of-N goes in the same tables, plots and paired comparisons.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter

from dpo_utils.intervals import group_by_prompt, summary_over_prompts
from dpo_utils.rewards import vader_reward
from dpo_utils.sampling import lengths_and_caps, sample_completions


def kl_bound(n: int) -> float:
    """:math:`\\log N - (N-1)/N`: best-of-N's KL to the reference for a reward without ties."""
    return math.log(n) - (n - 1) / n


def expected_best(values, n: int) -> float:
    """Mean over all size-``n`` subsets of ``values`` of the subset's largest value."""
    ordered, m = sorted(values), len(values)
    if not 1 <= n <= m:
        raise ValueError(f"best of n={n} needs 1 <= n <= {m} samples")
    return sum(ordered[i] * math.comb(i, n - 1) for i in range(n - 1, m)) / math.comb(m, n)


def selection_probabilities(values, n: int) -> list[float]:
    """Probability that best-of-``n`` (``n`` draws with replacement from ``values``, ties broken at
    random) returns each item: the empirical-distribution version of best-of-N."""
    m, counts = len(values), Counter(values)
    below, share = 0, {}
    for value in sorted(counts):
        at_most = below + counts[value]
        share[value] = ((at_most / m) ** n - (below / m) ** n) / counts[value]
        below = at_most
    return [share[value] for value in values]


def empirical_kl(values, n: int) -> float:
    """KL (nats) of best-of-``n`` from the empirical distribution of ``values``, ties included."""
    m = len(values)
    return sum(p * math.log(p * m) for p in selection_probabilities(values, n) if p > 0)


def best_of_n_kl(values, n: int) -> float:
    """Best-of-``n``'s KL to the reference for a prompt whose samples scored ``values``: the closed form
    :func:`kl_bound` when they are distinct; with ties, lowered in the ratio the ties lower the empirical KL."""
    if len(set(values)) == len(values):
        return kl_bound(n)
    distinct = empirical_kl(range(len(values)), n)
    return kl_bound(n) * empirical_kl(values, n) / distinct if distinct > 0 else 0.0


def best_of_n_results(rewards, prompts, ns, lengths=None, capped=None) -> dict[int, dict]:
    """Best-of-N for each N in ``ns`` from reference samples: ``rewards[i]`` of a sample of prompt
    ``prompts[i]`` (the same keys as :func:`~dpo_utils.evaluation.evaluate_policy`'s prompt indices).

    One value per prompt: reward by :func:`expected_best`, KL by :func:`best_of_n_kl` (the closed form unless
    the prompt's rewards tie); ``length`` and
    ``capped`` (optional, per sample) are averaged with :func:`selection_probabilities`' weights.
    Each result also has ``kl_bound`` and ``n``.
    """
    columns = {"reward": rewards, "length": lengths or [0] * len(rewards), "capped": capped or [0] * len(rewards)}
    grouped = {name: group_by_prompt(values, prompts) for name, values in columns.items()}
    keys = {repr(p): p for p in prompts}
    results = {}
    for n in ns:
        per_prompt = {"prompt": [], "reward": [], "log_ratio": [], "length": [], "capped": []}
        for key, scores in grouped["reward"].items():
            weights = selection_probabilities(scores, n)
            per_prompt["prompt"].append(keys[key])
            per_prompt["reward"].append(expected_best(scores, n))
            per_prompt["log_ratio"].append(best_of_n_kl(scores, n))
            for name in ("length", "capped"):
                per_prompt[name].append(sum(w * x for w, x in zip(weights, grouped[name][key])))
        results[n] = {"n": n, "kl_bound": kl_bound(n), "per_sample": per_prompt}
        results[n] |= summary_over_prompts("reward", per_prompt["reward"], per_prompt["prompt"])
        results[n] |= summary_over_prompts("kl", per_prompt["log_ratio"], per_prompt["prompt"])
        results[n] |= {name: statistics.fmean(per_prompt[name]) for name in ("length", "capped")}
    return results


def evaluate_best_of_n(
    reference, tokenizer, prompts, m: int, ns, max_new_tokens: int, seed: int = 2, reward_fn=None, **sampling
):
    """Sample ``m`` completions per prompt from ``reference``, score them with ``reward_fn`` (texts to
    rewards; default VADER) and return :func:`best_of_n_results` for each N in ``ns``: all N <= m come
    from the same samples. ``sampling``: more arguments for
    :func:`~dpo_utils.sampling.sample_completions` (``batch_size``)."""
    samples = sample_completions(reference, tokenizer, prompts, m, max_new_tokens, seed, **sampling)
    lengths, capped = lengths_and_caps(samples, tokenizer.eos_token_id, max_new_tokens)
    rewards = (reward_fn or vader_reward)([sample.text for sample in samples])
    return best_of_n_results(rewards, [sample.prompt_index for sample in samples], ns, lengths=lengths, capped=capped)
