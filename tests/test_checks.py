"""The data checker: every planted problem is reported on the right rows; clean data passes."""

import copy
import json

import pytest

from dpo_utils.checks import check_preference_data

pytestmark = pytest.mark.lowest_versions  # .ci/min-versions runs these


def conversation(prompt, chosen, rejected):
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


CLEAN = [
    {"prompt": "Rate the film.", "chosen": "Wonderful and moving.", "rejected": "Dull and far too long."},
    {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "A car."},
    conversation("Say hello.", "Hello! Nice to meet you.", "Go away, I am busy today."),
]


def test_clean_data_passes(tokenizer, tmp_path):
    path = tmp_path / "clean.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in CLEAN))
    report = check_preference_data(path, tokenizer)
    assert report.ok and report.findings == [], str(report)
    assert str(report).startswith(f"Checked 3 rows of {path}: 0 errors, 0 warnings")


PLANTED = [  # (row, the check that must name it)
    ({"prompt": "p", "chosen": "a"}, "invalid"),
    ({"prompt": "p", "chosen": "same", "rejected": "same"}, "identical"),
    ({"prompt": "Rate the film. ", "chosen": "Great fun.", "rejected": "Bad."}, "boundary"),
    ({"prompt": "word " * 80 + "end.", "chosen": "a", "rejected": "b"}, "prompt_too_long"),
    ({"prompt": "Tell me more.", "chosen": "word " * 40, "rejected": "ok"}, "truncated"),
    (CLEAN[0], "duplicate"),
    ({"prompt": CLEAN[1]["prompt"], "chosen": CLEAN[1]["rejected"], "rejected": CLEAN[1]["chosen"]}, "contradictory"),
]


@pytest.mark.parametrize("row, check", PLANTED, ids=[check for _, check in PLANTED])
def test_each_planted_problem_is_reported_on_its_row(tokenizer, row, check):
    report = check_preference_data(CLEAN + [row], tokenizer, max_prompt_length=64, max_completion_length=32)
    assert report.checks_failed == {check}, str(report)
    assert [f.rows for f in report.findings] == [[3]]
    assert report.ok == (check not in ("invalid", "identical", "prompt_too_long"))
    assert f"{check} (rows 3)" in str(report)


def test_all_planted_problems_at_once(tokenizer):
    report = check_preference_data(
        CLEAN + [row for row, _ in PLANTED], tokenizer, max_prompt_length=64, max_completion_length=32
    )
    assert report.checks_failed == {check for _, check in PLANTED}


def test_pad_equal_to_eos_and_missing_pad_are_reported(tokenizer):
    same = copy.deepcopy(tokenizer)
    same.pad_token = same.eos_token
    assert check_preference_data(CLEAN, same).checks_failed == {"pad_is_eos"}
    missing = copy.deepcopy(tokenizer)
    missing.pad_token = None
    report = check_preference_data(CLEAN, missing)
    assert report.checks_failed == {"no_pad_token"} and not report.ok


def test_template_without_eos_is_reported(tokenizer):
    plain_template = copy.deepcopy(tokenizer)
    plain_template.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    report = check_preference_data([conversation("Hi", " Hello there.", " No.")], plain_template)
    assert "no_eos" in report.checks_failed


def test_length_bias_needs_enough_pairs_and_a_clear_majority(tokenizer):
    biased = [
        {"prompt": f"Question {i}?", "chosen": "A long, detailed answer. " * 3, "rejected": "No."} for i in range(10)
    ]
    report = check_preference_data(biased, tokenizer)
    assert report.checks_failed == {"length_bias"} and "longer than rejected in 100%" in str(report)
    assert check_preference_data(biased[:4], tokenizer).findings == []  # too few pairs to call it
    balanced = biased[:5] + [{**row, "chosen": row["rejected"], "rejected": row["chosen"]} for row in biased[5:]]
    assert "length_bias" not in check_preference_data(balanced, tokenizer).checks_failed


def test_completions_cut_at_a_generation_cap_are_reported(tokenizer):
    story = "the keeper climbs the stairs and looks out over the grey water while the lamp turns slowly"
    backwards = " ".join(reversed(story.split()))
    cut = [{"prompt": f"Review film {i}.", "chosen": story, "rejected": backwards} for i in range(4)]
    ended = [{"prompt": f"Review film {i}.", "chosen": "Good film.", "rejected": "Bad film."} for i in range(4, 8)]
    report = check_preference_data(ended + cut, tokenizer)
    assert report.checks_failed == {"capped"}, str(report)
    assert report.findings[0].rows == [4, 5, 6, 7] and "8 of 16 completions" in str(report)
    finished = [{**row, "chosen": row["chosen"] + ".", "rejected": row["rejected"] + "."} for row in cut]
    assert check_preference_data(ended + finished, tokenizer).findings == []  # they end a sentence
    assert check_preference_data(ended + cut[:1], tokenizer).findings == []  # 2 of 10: no pile-up


def test_the_shipped_pairs_were_sampled_to_their_end(tokenizer):
    from dpo_utils.runtime.config import DATA_DIR

    report = check_preference_data(DATA_DIR / "sentiment_pairs.jsonl", tokenizer)
    assert "capped" not in report.checks_failed and report.n_rows == 138, str(report)
