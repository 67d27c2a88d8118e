import pytest

from dpo_utils.pairing import build_preference_rows
from dpo_utils.rewards import vader_reward
from dpo_utils.runtime.config import DATA_DIR
from dpo_utils.sampling import Sample
from dpo_utils.sentiment import load_prompts

pytestmark = pytest.mark.lowest_versions  # .ci/min-versions runs these


def test_vader_scores_sentiment_in_the_right_direction():
    good, bad, flat = vader_reward(["A wonderful, moving film. I loved it!", "Awful, boring and painful.", "A film."])
    assert good > 0.5 and bad < -0.5 and flat == 0.0


def test_pairs_take_best_against_worst_and_drop_small_gaps():
    prompts = [[{"role": "user", "content": "p0"}], [{"role": "user", "content": "p1"}]]
    samples = [
        Sample(0, None, None, "great"),
        Sample(0, None, None, "bad"),
        Sample(0, None, None, "ok"),
        Sample(1, None, None, "same"),
        Sample(1, None, None, "same too"),
    ]
    rows = build_preference_rows(prompts, samples, [0.9, -0.8, 0.1, 0.30, 0.25], pairs_per_prompt=2, min_gap=0.1)
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows] == [
        ("great", "bad"),
        ("great", "ok"),
    ]
    assert rows[0]["prompt"] == prompts[0]


def test_shipped_prompts_have_disjoint_train_and_test_splits():
    train, test = (
        load_prompts(DATA_DIR / "movie_review_prompts.jsonl", "train"),
        load_prompts(DATA_DIR / "movie_review_prompts.jsonl", "test"),
    )
    assert len(train) == 96 and len(test) == 48
    assert not {t[0]["content"] for t in train} & {t[0]["content"] for t in test}
    with pytest.raises(ValueError, match="no prompts with split='dev'"):
        load_prompts(DATA_DIR / "movie_review_prompts.jsonl", "dev")


def test_samples_cut_at_the_cap_are_left_out_of_the_pairs():
    prompts = [[{"role": "user", "content": "p0"}]]
    eos = 2
    samples = [
        Sample(0, None, [5, 6, eos], "great"),
        Sample(0, None, [5, 6, 7], "great but cut"),  # stopped at the cap: no end token
        Sample(0, None, [8, eos], "bad"),
        Sample(0, None, [9, 9, 9], "awful and cut"),
    ]
    rewards = [0.5, 0.9, -0.5, -0.9]
    kept = build_preference_rows(prompts, samples, rewards, pairs_per_prompt=1, eos_token_id=eos)
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in kept] == [("great", "bad")]
    every = build_preference_rows(prompts, samples, rewards, pairs_per_prompt=1)
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in every] == [
        ("great but cut", "awful and cut")
    ]
