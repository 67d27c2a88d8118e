"""Sampling with a KV cache, finished rows leaving the batch: the tokens of ``generate`` while every row runs,
greedy decoding row by row once rows stop at their EOS."""

import pytest
import torch

from dpo_utils.sampling import sample_rows
from tests.helpers import TinyTokenizer, tiny_gpt2, tiny_llama

pytestmark = pytest.mark.lowest_versions  # .ci/min-versions runs these

PROMPTS = [[5, 9, 11, 3, 7], [8, 4], [12, 13, 14]]  # different lengths: the batch is left-padded


def left_padded(prompts, pad_id=0):
    width = max(map(len, prompts))
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


class NoEos(TinyTokenizer):
    eos_token_id = -1  # no token ends a row: every row runs to the cap


@torch.no_grad()
def test_while_every_row_runs_it_samples_the_tokens_generate_samples():
    model, (ids, mask) = tiny_llama(), left_padded(PROMPTS)
    torch.manual_seed(3)
    ours = sample_rows(model, ids, mask, 12, NoEos())
    torch.manual_seed(3)
    theirs = model.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=1.0,
        max_new_tokens=12,
        min_new_tokens=12,
        pad_token_id=0,
        eos_token_id=None,
    )
    assert ours == theirs[:, ids.shape[1] :].tolist()


@pytest.mark.parametrize("make_model", [tiny_llama, tiny_gpt2], ids=["rotary positions", "absolute positions"])
@torch.no_grad()
def test_rows_that_end_leave_the_batch_and_the_others_go_on_unchanged(monkeypatch, make_model):
    """Greedy (multinomial replaced by argmax), so each row must equal its own greedy decoding alone, unpadded;
    the EOS is the token the first row writes second, so that row leaves early."""
    model, (ids, mask) = make_model(seed=1, vocab_size=16), left_padded(PROMPTS)
    monkeypatch.setattr(torch, "multinomial", lambda probs, n: probs.argmax(-1, keepdim=True))
    alone = lambda prompt, tokenizer: sample_rows(
        model, torch.tensor([prompt]), torch.ones(1, len(prompt), dtype=torch.long), 10, tokenizer
    )[0]
    eos = alone(PROMPTS[0], NoEos())[1]

    class Eos(TinyTokenizer):
        eos_token_id = eos

    batch = sample_rows(model, ids, mask, 10, Eos())
    assert batch[0][-1] == eos and len(batch[0]) <= 2
    assert batch == [alone(prompt, Eos()) for prompt in PROMPTS]
    assert any(len(row) > len(batch[0]) for row in batch), "a row went on after the first one ended"
