"""Sampling with a KV cache, prompt rows computed once, finished rows leaving the batch: the tokens of a
loop that recomputes every sequence while every row runs, greedy decoding row by row once rows stop at
their EOS; each token drawn from exactly the model's distribution."""

import pytest
import torch

from dpo_utils import sampling
from dpo_utils.sampling import draw_tokens, sample_rows
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


def sample_without_cache(model, ids, mask, max_new_tokens):
    """The plain way: every step runs the whole sequence again, one row per prompt, no cache."""
    for _ in range(max_new_tokens):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1].float()
        ids = torch.cat([ids, draw_tokens(logits)], dim=1)
        mask = torch.cat([mask, mask.new_ones(len(ids), 1)], dim=1)
    return ids[:, -max_new_tokens:].tolist()


@pytest.mark.parametrize("make_model", [tiny_llama, tiny_gpt2], ids=["rotary positions", "absolute positions"])
@torch.no_grad()
def test_while_every_row_runs_it_samples_the_tokens_of_a_loop_without_a_cache(make_model):
    """Two samples of each prompt, as sample_completions asks: the prompt rows are computed once and shared."""
    model, (ids, mask) = make_model(seed=2), left_padded([p for p in PROMPTS for _ in range(2)])
    torch.manual_seed(3)
    ours = sample_rows(model, ids, mask, 12, NoEos())
    torch.manual_seed(3)
    assert ours == sample_without_cache(model, ids, mask, 12)
    assert ours[0] != ours[1], "two samples of one prompt differ"


def test_draw_tokens_draws_from_the_softmax_and_never_a_token_of_probability_zero():
    logits = torch.tensor([[2.0, 0.5, -1.0, float("-inf"), 0.0], [0.0, 0.0, 0.0, 0.0, float("-inf")]])
    torch.manual_seed(0)
    n = 200_000
    drawn = draw_tokens(logits.repeat_interleave(n, dim=0))[:, 0].view(2, n)
    frequencies = torch.stack([torch.bincount(row, minlength=5) for row in drawn]).double() / n
    expected = torch.softmax(logits.double(), dim=-1)
    assert (frequencies - expected).abs().max() < 4 * (0.25 / n) ** 0.5  # four standard errors at most
    assert frequencies[0, 3] == 0 and frequencies[1, 4] == 0


@pytest.mark.parametrize("make_model", [tiny_llama, tiny_gpt2], ids=["rotary positions", "absolute positions"])
@torch.no_grad()
def test_rows_that_end_leave_the_batch_and_the_others_go_on_unchanged(monkeypatch, make_model):
    """Greedy (each draw replaced by argmax), so each row must equal its own greedy decoding alone, unpadded;
    the EOS is the token the first row writes second, so that row leaves early."""
    model, (ids, mask) = make_model(seed=1, vocab_size=16), left_padded(PROMPTS)
    monkeypatch.setattr(sampling, "draw_tokens", lambda logits: logits.argmax(-1, keepdim=True))
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
