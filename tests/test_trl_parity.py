"""Our tokenization and IPO loss against TRL 1.16's own code on the same rows."""

import json
import warnings

import pytest
import torch

from dpo_utils.data import PromptBoundaryWarning, prepare_preference_data
from dpo_utils.logprob_modes import batch_logprobs
from dpo_utils.losses import preference_loss
from dpo_utils.runtime.config import DATA_DIR
from dpo_utils.trl_check import trl_dpo_loss, trl_tokenized_pairs
from tests.helpers import tiny_llama, token_ids_of

pytestmark = pytest.mark.lowest_versions  # .ci/min-versions runs these


def chat(prompt, chosen, rejected):
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


BOUNDARY_ROWS = {
    "prompt ends in a space": {"prompt": "The film was ", "chosen": "great.", "rejected": "bad."},
    "completion starts with punctuation": {"prompt": "Rate it:", "chosen": "!!! wow", "rejected": ", meh"},
    "completion starts with newlines": {"prompt": "Say hi", "chosen": "\n\nhello", "rejected": "'s fine"},
    "completion already ends with EOS": {"prompt": "Q:", "chosen": " yes<|im_end|>", "rejected": " no"},
    "conversational": chat("Review a film.", "Loved it.", "Hated it."),
    "conversational, completion starts with a newline": chat("Review a film.", "\nLoved it.", "...hated it."),
    "conversational with a system message": {
        **chat("Hi", "Hello!", "Go away."),
        "prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}],
    },
}


def test_tokenization_matches_trl_on_every_shipped_pair(tokenizer):
    rows = [json.loads(line) for line in (DATA_DIR / "sentiment_pairs.jsonl").read_text().splitlines() if line.strip()]
    ours, _ = prepare_preference_data(rows, tokenizer, max_prompt_length=10**6, max_completion_length=10**6)
    assert len(rows) == 138 and ours == trl_tokenized_pairs(tokenizer, rows)


@pytest.mark.parametrize("case", BOUNDARY_ROWS)
def test_tokenization_matches_trl_at_the_prompt_boundary(tokenizer, case):
    row = BOUNDARY_ROWS[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PromptBoundaryWarning)
        (ours,), _ = prepare_preference_data([row], tokenizer)
    assert ours == trl_tokenized_pairs(tokenizer, [row])[0]


def test_the_boundary_cases_include_merges_that_separate_tokenization_misses(tokenizer):
    """The cases above can tell the two ways apart: where a merge crosses the boundary they differ."""
    rows = [BOUNDARY_ROWS["prompt ends in a space"], BOUNDARY_ROWS["completion starts with punctuation"]]
    separate, _ = prepare_preference_data(rows, tokenizer, tokenization="separate")
    assert all(a != b for a, b in zip(separate, trl_tokenized_pairs(tokenizer, rows)))


def test_a_merge_across_the_boundary_warns_and_names_the_lost_prompt_end(tokenizer):
    with pytest.warns(PromptBoundaryWarning, match="prompt's last tokens ' ' are in no training sequence"):
        prepare_preference_data([BOUNDARY_ROWS["prompt ends in a space"]], tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PromptBoundaryWarning)
        prepare_preference_data([BOUNDARY_ROWS["conversational"]], tokenizer)


def our_loss(policy, reference, tokenizer, rows, beta, loss_type):
    pairs, _ = prepare_preference_data(rows, tokenizer)
    with torch.no_grad():
        chosen, rejected, counts = batch_logprobs(policy, pairs, tokenizer.pad_token_id)
        ref_chosen, ref_rejected, _ = batch_logprobs(reference, pairs, tokenizer.pad_token_id)
    n = len(pairs)
    return (
        preference_loss(
            "dpo",
            chosen,
            rejected,
            counts[:n],
            counts[n:],
            ref_chosen_logps=ref_chosen,
            ref_rejected_logps=ref_rejected,
            beta=beta,
            loss_type=loss_type,
        )
        .losses.mean()
        .item()
    )


def test_ipo_and_dpo_losses_equal_trls_on_completions_of_unequal_length(tokenizer):
    rows = [
        {"prompt": f"Review film {i}.", "chosen": "Loved it." * (i + 1), "rejected": f"Hated it, {i} dull hours."}
        for i in range(4)
    ]
    policy, reference = tiny_llama(0, **token_ids_of(tokenizer)), tiny_llama(1, **token_ids_of(tokenizer))
    theirs = {
        loss_type: trl_dpo_loss(policy, reference, tokenizer, rows, beta=0.1, loss_type=loss_type)
        for loss_type in ("ipo", "sigmoid")
    }
    for loss_type, value in theirs.items():
        assert our_loss(policy, reference, tokenizer, rows, 0.1, loss_type) == pytest.approx(value, rel=1e-5), (
            loss_type
        )
    summed = our_loss(policy, reference, tokenizer, rows, 0.1, "ipo_sum")
    assert abs(summed - theirs["ipo"]) > 1.0  # the summed form is another loss: this test tells them apart
