"""sample_score_and_pair gives what notebook 07's separate steps gave, for the same seed."""

import json

import pytest

from dpo_utils.data import prepare_preference_data
from dpo_utils.pairing import build_preference_rows
from dpo_utils.preference_rows import save_preference_jsonl
from dpo_utils.runtime.config import DATA_DIR
from dpo_utils.sampling import sample_completions
from dpo_utils.sentiment import load_prompts, sample_score_and_pair
from tests.helpers import ONE_LAYER_WIDTH_16, tiny_llama, token_ids_of


def length_reward(texts):
    """A deterministic stand-in for VADER: random tiny models write no sentiment words."""
    return [len(text) / 10 for text in texts]


@pytest.fixture(scope="module")
def setup(tokenizer):
    return (
        tiny_llama(0, **token_ids_of(tokenizer), **ONE_LAYER_WIDTH_16, tie_word_embeddings=False),
        tokenizer,
        load_prompts(DATA_DIR / "movie_review_prompts.jsonl", "train")[:3],
    )


def test_the_helper_repeats_the_notebook_steps_exactly(setup, tmp_path):
    model, tokenizer, prompts = setup
    samples = sample_completions(model, tokenizer, prompts, 4, 6, seed=3)
    rows = build_preference_rows(
        prompts, samples, length_reward([t for *_, t in samples]), pairs_per_prompt=2, min_gap=0.1
    )
    save_preference_jsonl(rows, tmp_path / "by_hand.jsonl")
    pairs, _ = prepare_preference_data(
        tmp_path / "by_hand.jsonl", tokenizer, max_prompt_length=128, max_completion_length=7
    )

    made = sample_score_and_pair(
        model, tokenizer, prompts, 4, 6, tmp_path / "helper.jsonl", seed=3, reward_fn=length_reward, keep_capped=True
    )
    assert len(rows) >= 3  # the comparison has pairs to compare
    assert made.samples == samples and made.rows == rows and made.pairs == pairs
    assert (tmp_path / "helper.jsonl").read_text() == (tmp_path / "by_hand.jsonl").read_text()
    assert made.report.skipped == [] and made.path == tmp_path / "helper.jsonl"


def test_another_seed_gives_other_samples(setup, tmp_path):
    model, tokenizer, prompts = setup
    first = sample_score_and_pair(
        model, tokenizer, prompts, 2, 6, tmp_path / "a.jsonl", seed=0, reward_fn=length_reward, keep_capped=True
    )
    second = sample_score_and_pair(
        model, tokenizer, prompts, 2, 6, tmp_path / "b.jsonl", seed=1, reward_fn=length_reward, keep_capped=True
    )
    assert [s[2] for s in first.samples] != [s[2] for s in second.samples]
    assert [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()] == [
        {k: row[k] for k in ("prompt", "chosen", "rejected")} for row in first.rows
    ]


def test_by_default_samples_cut_at_the_cap_make_no_pairs(setup, tmp_path):
    model, tokenizer, prompts = setup  # a random model does not sample the end token within 6 tokens
    with pytest.raises(ValueError, match="12 stopped at max_new_tokens=6 and are left out"):
        sample_score_and_pair(model, tokenizer, prompts, 4, 6, tmp_path / "p.jsonl", seed=3, reward_fn=length_reward)
    made = sample_score_and_pair(
        model, tokenizer, prompts, 4, 6, tmp_path / "p.jsonl", seed=3, reward_fn=length_reward, keep_capped=True
    )
    assert made.capped == len(made.samples) == 12 and not any(s[2][-1] == tokenizer.eos_token_id for s in made.samples)
    assert made.describe() == f"12 samples, 12 (100%) cut at the token cap and kept; {len(made.rows)} pairs"
