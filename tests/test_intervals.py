"""Intervals with the prompt as the unit: standard errors, bootstrap intervals, paired comparisons,
and evaluate_policy's use of them."""

import copy
import math
import random
import statistics

import pytest

import dpo_utils.evaluation as evaluation
from dpo_utils.evaluation import compare_evaluations, evaluate_policy
from dpo_utils.intervals import (
    describe_difference,
    mean_with_prompt_interval,
    paired_difference,
    prompt_standard_error,
)
from dpo_utils.judging import win_rate
from dpo_utils.kl_check import tiny_model, tiny_tokenizer
from dpo_utils.sampling import hit_the_cap


def two_models_on_shared_prompts(gap: float, n_prompts: int = 12, per_prompt: int = 25, seed: int = 0):
    """Per-sample scores of two models on the same prompts: a large prompt effect both share, small noise."""
    rng = random.Random(seed)
    effects = [rng.gauss(0, 1) for _ in range(n_prompts)]
    prompts = [p for p in range(n_prompts) for _ in range(per_prompt)]
    a = [effects[p] + gap + rng.gauss(0, 0.1) for p in prompts]
    b = [effects[p] + rng.gauss(0, 0.1) for p in prompts]
    return a, b, prompts


def test_prompt_standard_error_counts_prompts_not_samples():
    values, prompts = [1.0] * 10 + [0.0] * 10, [0] * 10 + [1] * 10  # two prompts, no spread inside either
    naive = statistics.stdev(values) / math.sqrt(len(values))
    assert prompt_standard_error(values, prompts) == pytest.approx(statistics.stdev([1.0, 0.0]) / math.sqrt(2))
    assert prompt_standard_error(values, prompts) > 3 * naive
    assert math.isnan(prompt_standard_error([1.0, 2.0], [0, 0]))


def test_paired_comparison_separates_a_small_gap_the_unpaired_errors_hide():
    a, b, prompts = two_models_on_shared_prompts(gap=0.1)
    result = paired_difference(a, prompts, b, prompts)
    assert result["difference"] == pytest.approx(statistics.fmean(a) - statistics.fmean(b))
    assert result["separated"] and 0 < result["low"] < 0.1 < result["high"] < 0.2
    unpaired = math.hypot(prompt_standard_error(a, prompts), prompt_standard_error(b, prompts))
    assert result["difference"] < 1.96 * unpaired  # treating the models as independent: "no difference"
    assert "separated)" in describe_difference(result) and "12 prompts" in describe_difference(result)


def test_paired_comparison_of_equal_models_is_not_separated():
    a, b, prompts = two_models_on_shared_prompts(gap=0.0, seed=3)
    result = paired_difference(a, prompts, b, prompts)
    assert result["low"] < 0 < result["high"] and not result["separated"]
    assert "not separated: the interval includes 0" in describe_difference(result)


def test_paired_comparison_needs_the_same_prompts():
    with pytest.raises(ValueError, match="same prompts on both sides"):
        paired_difference([1.0, 2.0], [0, 1], [1.0, 2.0], [0, 2])


def test_win_rate_and_mean_interval_share_the_bootstrap():
    outcomes = [1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    prompts = [0, 0, 1, 1, 2, 2, 3, 3]
    rate = win_rate(outcomes, [0.5] * 8, prompts)
    mean = mean_with_prompt_interval(outcomes, prompts)
    assert (rate["rate"], rate["low"], rate["high"]) == (mean["mean"], mean["low"], mean["high"])


def test_hit_the_cap_means_no_eos_at_the_limit():
    assert hit_the_cap([5, 6, 7], eos_token_id=2, max_new_tokens=3)
    assert not hit_the_cap([5, 6, 2], eos_token_id=2, max_new_tokens=3)
    assert not hit_the_cap([5, 2], eos_token_id=2, max_new_tokens=3)


def test_evaluate_policy_reports_intervals_over_prompts_lengths_and_caps():
    tokenizer, policy, reference = tiny_tokenizer(), tiny_model(seed=1), tiny_model(seed=2)
    prompts = ["a b", "b c", "c d", "d a"]
    reward = lambda texts: [float(len(text)) for text in texts]
    result = evaluate_policy(policy, reference, tokenizer, prompts, reward, n_samples=6, max_new_tokens=3)
    per_sample = result["per_sample"]
    assert per_sample["prompt"] == [p for p in range(4) for _ in range(6)]
    assert result["reward"] == pytest.approx(statistics.fmean(per_sample["reward"]))
    assert result["kl"] == pytest.approx(statistics.fmean(per_sample["log_ratio"]))
    for name, values in (("reward", per_sample["reward"]), ("kl", per_sample["log_ratio"])):
        assert result[f"{name}_low"] <= result[name] <= result[f"{name}_high"]
        assert result[f"{name}_sem"] == pytest.approx(prompt_standard_error(values, per_sample["prompt"]))
    assert result["length"] == pytest.approx(statistics.fmean(per_sample["length"]))
    assert 0 < result["length"] <= 3
    assert result["capped"] == pytest.approx(statistics.fmean(per_sample["capped"]))
    assert all(n == 3 for n, cut in zip(per_sample["length"], per_sample["capped"]) if cut)
    assert any(per_sample["capped"]) and not all(per_sample["capped"])  # some stop at EOS, some at the cap
    itself = compare_evaluations(result, result)
    assert itself["difference"] == 0 and not itself["separated"]
    baseline = evaluate_policy(reference, reference, tokenizer, prompts, reward, n_samples=6, max_new_tokens=3)
    assert compare_evaluations(result, baseline, "log_ratio")["n_prompts"] == 4


def test_the_reference_evaluated_against_itself_has_log_ratios_of_exactly_0_without_a_pass(monkeypatch):
    tokenizer, reference = tiny_tokenizer(), tiny_model(seed=2)
    prompts, reward = ["a b", "b c"], lambda texts: [float(len(text)) for text in texts]
    twin = copy.deepcopy(reference)  # equal weights, another object: the two passes run, and give exactly 0
    passes = evaluate_policy(twin, reference, tokenizer, prompts, reward, n_samples=3, max_new_tokens=3)
    monkeypatch.setattr(evaluation, "sequence_logprobs_of", lambda *args, **kwargs: pytest.fail("a needless pass"))
    itself = evaluate_policy(reference, reference, tokenizer, prompts, reward, n_samples=3, max_new_tokens=3)
    assert itself["per_sample"]["log_ratio"] == [0.0] * 6 and itself["kl"] == 0.0
    assert itself["per_sample"] == passes["per_sample"] and itself["reward"] == passes["reward"]


def test_describe_comparisons_gives_one_paired_line_per_comparison():
    from dpo_utils.evaluation import describe_comparisons

    a, b, prompts = two_models_on_shared_prompts(gap=0.1)
    result = lambda scores: {"per_sample": {"reward": scores, "log_ratio": scores, "prompt": prompts}}
    results = {"A": result(a), "B": result(b)}
    lines = describe_comparisons(results, [("A", "B", "reward"), ("B", "B", "log_ratio")]).splitlines()
    assert lines[0].startswith("A - B, reward:") and lines[0].endswith("separated)")
    assert lines[1].startswith("B - B, KL:    ") and "+0.000" in lines[1] and "not separated" in lines[1]
    assert describe_difference(compare_evaluations(results["A"], results["B"])) in lines[0]


def test_describe_seed_spread_gives_the_range_of_reward_and_kl_over_seeds():
    from dpo_utils.evaluation import describe_seed_spread

    results = {
        "run, seed 0": {"reward": 0.5, "kl": 2.0},
        "run, seed 1": {"reward": 0.625, "kl": 1.5},
        "other": {"reward": 9.0, "kl": 9.0},  # not one of the seeds: must not count
        "run, seed 2": {"reward": 0.55, "kl": 2.25},
    }
    line = describe_seed_spread(results, ["run, seed 0", "run, seed 1", "run, seed 2"], "run")
    assert line == "run, 3 seeds: reward +0.500 to +0.625 (spread 0.125); KL +1.500 to +2.250 (spread 0.750)"
