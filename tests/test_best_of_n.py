"""Best-of-N's reward and KL estimates against brute force and the closed form."""

import itertools
import math
import random

import pytest

from dpo_utils.best_of_n import (
    best_of_n_kl,
    best_of_n_results,
    empirical_kl,
    expected_best,
    kl_bound,
    selection_probabilities,
)
from dpo_utils.evaluation import compare_evaluations, evaluation_table

TIED = [0.0, 0.5, 0.0, -0.3, 0.5, 0.9, 0.0]


def test_kl_bound_is_the_closed_form():
    assert kl_bound(1) == 0.0
    assert kl_bound(4) == pytest.approx(math.log(4) - 0.75)
    assert kl_bound(16) == pytest.approx(1.8351, abs=1e-4)


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_expected_best_is_the_mean_over_every_subset(n):
    subsets = list(itertools.combinations(TIED, n))
    assert expected_best(TIED, n) == pytest.approx(sum(map(max, subsets)) / len(subsets))
    with pytest.raises(ValueError, match="needs 1 <= n <= 7"):
        expected_best(TIED, 8)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_selection_probabilities_match_every_draw_with_ties_split_evenly(n):
    exact = [0.0] * len(TIED)
    for draw in itertools.product(range(len(TIED)), repeat=n):
        best = max(TIED[i] for i in draw)
        winners = sorted({i for i in draw if TIED[i] == best})
        for i in winners:  # a tie among distinct drawn items: each equally likely
            exact[i] += 1 / len(winners) / len(TIED) ** n
    # the estimator splits a tied value's share over all items with that value, drawn or not
    for value in set(TIED):
        items = [i for i, v in enumerate(TIED) if v == value]
        assert sum(selection_probabilities(TIED, n)[i] for i in items) == pytest.approx(sum(exact[i] for i in items))
    assert sum(selection_probabilities(TIED, n)) == pytest.approx(1.0)


def test_the_empirical_kl_meets_the_closed_form_only_for_many_distinct_samples():
    rng = random.Random(0)
    distinct = [rng.random() for _ in range(2000)]
    for n in (2, 4, 16):
        assert empirical_kl(distinct, n) == pytest.approx(kl_bound(n), abs=0.005)
    assert empirical_kl(distinct[:16], 16) == pytest.approx(1.79, abs=0.01)  # 16 samples: biased low
    assert empirical_kl(TIED, 4) < kl_bound(4) - 0.05


def test_kl_is_the_closed_form_without_ties_and_lower_by_the_share_ties_take():
    rng = random.Random(0)
    sixteen = [rng.random() for _ in range(16)]
    assert best_of_n_kl(sixteen, 16) == kl_bound(16)  # exact: no bias from the 16 samples
    share = empirical_kl(TIED, 4) / empirical_kl(range(len(TIED)), 4)
    assert best_of_n_kl(TIED, 4) == pytest.approx(kl_bound(4) * share) and share < 1
    assert best_of_n_kl([0.2] * 10, 8) == pytest.approx(0.0)  # all tied: best-of-N is the reference


def test_results_have_one_value_per_prompt_and_compare_with_evaluate_policy_results():
    rng = random.Random(1)
    prompts = [p for p in range(6) for _ in range(16)]
    rewards = [rng.gauss(p / 10, 0.3) for p in prompts]
    results = best_of_n_results(rewards, prompts, [1, 4, 16], lengths=[10] * 96, capped=[0] * 96)
    assert results[1]["reward"] == pytest.approx(sum(rewards) / 96) and results[1]["kl"] == pytest.approx(0.0)
    assert results[1]["reward"] < results[4]["reward"] < results[16]["reward"]
    assert results[4]["kl"] <= results[4]["kl_bound"] + 1e-9 and results[16]["per_sample"]["prompt"] == list(range(6))
    assert results[4]["reward_low"] < results[4]["reward"] < results[4]["reward_high"] and results[4]["length"] == 10
    difference = compare_evaluations(results[16], results[1])
    assert difference["n_prompts"] == 6 and difference["separated"] and difference["difference"] > 0


def test_evaluate_best_of_n_ranks_the_references_own_samples(tokenizer):
    from dpo_utils.best_of_n import evaluate_best_of_n
    from dpo_utils.runtime.config import DATA_DIR
    from dpo_utils.sampling import sample_completions
    from dpo_utils.sentiment import load_prompts
    from tests.helpers import ONE_LAYER_WIDTH_16, tiny_llama, token_ids_of

    sizes = ONE_LAYER_WIDTH_16 | dict(num_key_value_heads=2, tie_word_embeddings=False)
    model = tiny_llama(0, **token_ids_of(tokenizer), **sizes)
    prompts = load_prompts(DATA_DIR / "movie_review_prompts.jsonl", "test")[:3]
    count_e = lambda texts: [text.count("e") / 10 for text in texts]  # random text has no sentiment words
    results = evaluate_best_of_n(model, tokenizer, prompts, 4, [1, 4], 6, reward_fn=count_e)

    samples = sample_completions(model, tokenizer, prompts, 4, 6, seed=2)
    scores = [count_e([text for i, *_, text in samples if i == p]) for p in range(3)]
    assert len(set(sum(scores, []))) > 3  # the check below needs rewards that differ
    assert results[1]["reward"] == pytest.approx(sum(sum(s) / 4 for s in scores) / 3)
    assert results[4]["reward"] == pytest.approx(sum(max(s) for s in scores) / 3)
    assert results[1]["kl"] == pytest.approx(0.0)
    assert 0 < results[4]["kl"] <= kl_bound(4) + 1e-12
    assert results[4]["capped"] == 1.0  # 6 new tokens of a random model never end on their own


def test_the_table_shows_a_closed_form_kl_without_an_interval():
    rng = random.Random(2)
    prompts = [p for p in range(4) for _ in range(8)]
    results = best_of_n_results([rng.random() for _ in prompts], prompts, [4])
    assert results[4]["kl"] == pytest.approx(kl_bound(4))
    assert f"{kl_bound(4):.2f} (closed form)" in evaluation_table({"best of 4": results[4]})
