"""The sequence-level KL estimate of evaluate_policy against an exact sum (dpo_utils.kl_check)."""

import pytest

import dpo_utils.evaluation as evaluation
from dpo_utils.kl_check import check_kl_estimator, completion_logprobs, tiny_model


def test_the_enumeration_covers_every_completion_sampling_can_end_with():
    logps = completion_logprobs(tiny_model(seed=1), [1, 2], max_new_tokens=3)
    assert len(logps) == 1 + 4 + 16 + 64  # EOS after 0, 1 or 2 words, or cut after 3 words
    assert all(y[-1] == 0 or len(y) == 3 for y in logps)


def test_kl_estimate_agrees_with_the_exact_kl():
    check = check_kl_estimator()
    assert check.exact > 8 * check.sem  # far from 0, unlike a model compared with itself
    assert check.ok, check


def test_the_check_fails_when_samples_come_from_the_reference(monkeypatch):
    """The classic bug: completions sampled from the reference estimate -KL(ref || pi), about -1.2 nats here."""
    reference = tiny_model(seed=2)
    sample = evaluation.sample_completions
    monkeypatch.setattr(
        evaluation, "sample_completions", lambda policy, *args, **kwargs: sample(reference, *args, **kwargs)
    )
    check = check_kl_estimator()
    assert not check.ok
    assert check.estimate == pytest.approx(-check.reverse_exact, abs=4 * check.sem)
