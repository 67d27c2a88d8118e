import json

import pytest
import torch
from transformers import AutoTokenizer

from dpo_utils.data import PreferenceDataError, collate_pairs, prepare_preference_data
from dpo_utils.models import ensure_pad_token, offline_model_dir
from dpo_utils.trainer import batch_logprobs
from tests.helpers import tiny_gpt2, tiny_llama


@pytest.fixture(scope="module")
def tokenizer():
    tok = AutoTokenizer.from_pretrained(offline_model_dir())
    ensure_pad_token(tok)
    return tok


GOOD = {"prompt": "Rate the film.", "chosen": "Wonderful and moving.", "rejected": "Dull."}


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.mark.parametrize("bad, message", [
    ({"prompt": "p", "chosen": "a"}, "row 1, field 'rejected': missing"),
    ({"prompt": "p", "chosen": "  ", "rejected": "b"}, "row 1, field 'chosen': empty"),
    ({"prompt": "p", "chosen": 3, "rejected": "b"}, "row 1, field 'chosen': expected a non-empty string"),
    ({"prompt": [{"role": "user", "content": 5}], "chosen": [{"role": "assistant", "content": "a"}],
      "rejected": [{"role": "assistant", "content": "b"}]}, "row 1, field 'prompt': message 0"),
    ({"prompt": "p", "chosen": "same", "rejected": "same"}, "row 1, fields 'chosen'/'rejected': identical"),
    ({"prompt": "word " * 300, "chosen": "a", "rejected": "b"}, "row 1, field 'prompt': 301 tokens, longer than max_prompt_length=64"),
])
def test_bad_rows_name_file_row_and_field(tmp_path, tokenizer, bad, message):
    path = write_jsonl(tmp_path / "prefs.jsonl", [GOOD, bad])
    with pytest.raises(PreferenceDataError) as error:
        prepare_preference_data(path, tokenizer, max_prompt_length=64)
    assert str(path) in str(error.value) and message in str(error.value)


def test_skip_mode_counts_and_names_bad_rows(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "prefs.jsonl", [GOOD, {"prompt": "p", "chosen": "x", "rejected": "x"}, GOOD])
    pairs, report = prepare_preference_data(path, tokenizer, on_bad_row="skip")
    assert len(pairs) == 2 and [row for row, _ in report.skipped] == [1]
    assert "row 1" in str(report)


def test_invalid_json_line_is_reported(tmp_path, tokenizer):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(GOOD) + "\n{not json\n")
    with pytest.raises(PreferenceDataError, match="broken.jsonl, line 2: not valid JSON"):
        prepare_preference_data(path, tokenizer)


def test_conversational_rows_split_at_the_generation_prompt(tokenizer):
    row = {"prompt": [{"role": "user", "content": "Review a film."}],
           "chosen": [{"role": "assistant", "content": "Loved it."}],
           "rejected": [{"role": "assistant", "content": "Hated it."}]}
    (pair,), _ = prepare_preference_data([row], tokenizer)
    prompt = tokenizer.decode(pair.prompt_ids)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(pair.chosen_ids).startswith("Loved it.<|im_end|>")
    assert tokenizer.eos_token_id in pair.chosen_ids  # EOS is trained on, never masked as padding


def test_plain_rows_get_eos_and_completion_truncation(tokenizer):
    (pair,), _ = prepare_preference_data([{"prompt": "Q:", "chosen": " yes " * 50, "rejected": " no"}], tokenizer,
                                         max_completion_length=8)
    assert len(pair.chosen_ids) == 8 and pair.rejected_ids[-1] == tokenizer.eos_token_id


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
