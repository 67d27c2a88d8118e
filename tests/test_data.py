import json

import pytest
import torch

from dpo_utils.data import collate_pairs, prepare_preference_data
from dpo_utils.logprob_modes import batch_logprobs
from dpo_utils.preference_rows import PreferenceDataError
from tests.helpers import tiny_gpt2, tiny_llama

pytestmark = pytest.mark.lowest_versions  # .ci/min-versions runs these


GOOD = {"prompt": "Rate the film.", "chosen": "Wonderful and moving.", "rejected": "Dull."}


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"prompt": "p", "chosen": "a"}, "line 2, field 'rejected': missing"),
        ({"prompt": "p", "chosen": "  ", "rejected": "b"}, "line 2, field 'chosen': empty"),
        ({"prompt": "p", "chosen": 3, "rejected": "b"}, "line 2, field 'chosen': expected a non-empty string"),
        (
            {
                "prompt": [{"role": "user", "content": 5}],
                "chosen": [{"role": "assistant", "content": "a"}],
                "rejected": [{"role": "assistant", "content": "b"}],
            },
            "line 2, field 'prompt': message 0",
        ),
        ({"prompt": "p", "chosen": "same", "rejected": "same"}, "line 2, fields 'chosen'/'rejected': identical"),
        (
            {"prompt": "word " * 299 + "word", "chosen": "a", "rejected": "b"},  # no space to merge with "a"
            "line 2, field 'prompt': 300 tokens, longer than max_prompt_length=64",
        ),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, tokenizer, bad, message):
    path = write_jsonl(tmp_path / "prefs.jsonl", [GOOD, bad])
    with pytest.raises(PreferenceDataError) as error:
        prepare_preference_data(path, tokenizer, max_prompt_length=64)
    assert str(path) in str(error.value) and message in str(error.value)


def test_file_rows_are_named_by_their_line_blank_lines_included(tmp_path, tokenizer):
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + json.dumps({"prompt": "p", "chosen": "a"}) + "\n")
    with pytest.raises(PreferenceDataError, match="prefs.jsonl, line 3, field 'rejected': missing"):
        prepare_preference_data(path, tokenizer)


def test_list_rows_are_named_by_their_index(tokenizer):
    with pytest.raises(PreferenceDataError, match="^list, row 1, field 'rejected': missing"):
        prepare_preference_data([GOOD, {"prompt": "p", "chosen": "a"}], tokenizer)


def test_skip_mode_counts_and_names_bad_rows(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "prefs.jsonl", [GOOD, {"prompt": "p", "chosen": "x", "rejected": "x"}, GOOD])
    pairs, report = prepare_preference_data(path, tokenizer, on_bad_row="skip")
    assert len(pairs) == 2 and [line for line, _ in report.skipped] == [2]
    assert "prefs.jsonl, line 2, fields 'chosen'/'rejected': identical" in str(report)


def test_skip_mode_skips_invalid_json_and_reports_in_file_order(tmp_path, tokenizer):
    path = tmp_path / "prefs.jsonl"
    lines = [
        json.dumps(GOOD),
        json.dumps({"prompt": "p", "chosen": "x", "rejected": "x"}),
        "{not json",
        "",
        json.dumps(GOOD),
    ]
    path.write_text("\n".join(lines) + "\n")
    pairs, report = prepare_preference_data(path, tokenizer, on_bad_row="skip")
    assert len(pairs) == 2
    assert [line for line, _ in report.skipped] == [2, 3]
    assert "line 3: not valid JSON" in report.skipped[1][1]
    assert str(report).splitlines()[0] == "skipped 2 rows:"


def test_raise_mode_stops_at_the_first_problem_in_file_order(tmp_path, tokenizer):
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join([json.dumps({"prompt": "p", "chosen": "a"}), "{not json"]) + "\n")
    with pytest.raises(PreferenceDataError, match="line 1, field 'rejected'"):
        prepare_preference_data(path, tokenizer)


def test_invalid_json_line_is_reported(tmp_path, tokenizer):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(GOOD) + "\n{not json\n")
    with pytest.raises(PreferenceDataError, match="broken.jsonl, line 2: not valid JSON"):
        prepare_preference_data(path, tokenizer)


def test_missing_file_names_the_path(tmp_path, tokenizer):
    path = tmp_path / "nowhere" / "prefs.jsonl"
    with pytest.raises(PreferenceDataError, match="prefs.jsonl: no such preference data file") as error:
        prepare_preference_data(path, tokenizer)
    assert isinstance(error.value, FileNotFoundError) and str(path) in str(error.value)


def test_conversational_rows_split_at_the_generation_prompt(tokenizer):
    row = {
        "prompt": [{"role": "user", "content": "Review a film."}],
        "chosen": [{"role": "assistant", "content": "Loved it."}],
        "rejected": [{"role": "assistant", "content": "Hated it."}],
    }
    (pair,), _ = prepare_preference_data([row], tokenizer)
    prompt = tokenizer.decode(pair.prompt_ids)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(pair.chosen_ids).startswith("Loved it.<|im_end|>")
    assert tokenizer.eos_token_id in pair.chosen_ids  # EOS is trained on, never masked as padding


def test_plain_rows_get_eos_and_completion_truncation(tokenizer):
    (pair,), _ = prepare_preference_data(
        [{"prompt": "Q:", "chosen": " yes " * 50, "rejected": " no"}], tokenizer, max_completion_length=8
    )
    assert len(pair.chosen_ids) == 8 and pair.rejected_ids[-1] == tokenizer.eos_token_id


def test_the_loader_counts_the_completions_it_cuts(tmp_path, tokenizer):
    long_ = {"prompt": "Q:", "chosen": " yes" * 50, "rejected": " no" * 50}
    path = write_jsonl(tmp_path / "prefs.jsonl", [GOOD, long_])
    _, report = prepare_preference_data(path, tokenizer, max_completion_length=8)
    assert report.truncated == [(2, "line 2, field 'chosen'"), (2, "line 2, field 'rejected'")]
    assert str(report) == (
        "no rows skipped; cut 2 completions at max_completion_length=8 tokens, losing their EOS: "
        "line 2, field 'chosen'; line 2, field 'rejected'"
    )
    _, untouched = prepare_preference_data(path, tokenizer, max_completion_length=64)
    assert not untouched.truncated and str(untouched) == "no rows skipped"


def test_collate_masks_only_completion_tokens():
    from dpo_utils.data import TokenizedPair

    batch = collate_pairs([TokenizedPair([5, 6], [7, 8, 2], [9, 2])], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 2], [5, 6, 9, 2, 0]]
    assert batch["completion_mask"].tolist() == [[0, 0, 1, 1, 1], [0, 0, 1, 1, 0]]
    left = collate_pairs([TokenizedPair([5, 6], [7, 8, 2], [9, 2])], pad_token_id=0, padding_side="left")
    assert left["completion_mask"].tolist() == [[0, 0, 1, 1, 1], [0, 0, 0, 1, 1]]
    assert left["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]]


@pytest.mark.parametrize("make_model", [tiny_llama, tiny_gpt2])
def test_left_and_right_padded_batches_give_the_same_logprobs(make_model):
    from dpo_utils.data import TokenizedPair

    pairs = [TokenizedPair([5, 6, 7], [8, 9, 2], [10, 2]), TokenizedPair([11], [12, 13, 14, 15, 2], [16, 2])]
    model = make_model()
    with torch.no_grad():
        right = batch_logprobs(model, pairs, pad_token_id=0, padding_side="right")
        left = batch_logprobs(model, pairs, pad_token_id=0, padding_side="left")
    assert torch.allclose(right[0], left[0], atol=1e-5) and torch.allclose(right[1], left[1], atol=1e-5)


def test_data_checker_names_jsonl_rows_by_line_too(tokenizer, tmp_path):
    from dpo_utils.checks import check_preference_data

    path = tmp_path / "planted.jsonl"
    lines = [json.dumps(GOOD), "", "{not json", json.dumps({"prompt": "p", "chosen": "same", "rejected": "same"})]
    path.write_text("\n".join(lines) + "\n")
    report = check_preference_data(path, tokenizer)
    assert {f.check: f.rows for f in report.findings} == {"invalid": [3], "identical": [4]}, str(report)
    assert "invalid (lines 3): not valid JSON" in str(report) and "identical (lines 4)" in str(report)
