import math

import pytest
import torch

from dpo_utils.logprobs import model_sequence_logprobs, sequence_logprobs
from tests.helpers import tiny_gpt2, tiny_llama

pytestmark = pytest.mark.lowest_versions  # .ci/min-versions runs these


def test_sum_over_completion_uses_shifted_targets():
    # vocab of 3; logits at position t predict token t+1
    logits = torch.log(torch.tensor([[[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.25, 0.25, 0.5]]]))
    labels = torch.tensor([[0, 1, 2]])
    mask = torch.tensor([[0, 1, 1]])  # token 0 is the prompt
    expected = math.log(0.2) + math.log(0.3)  # p(1 | pos 0), p(2 | pos 1)
    assert sequence_logprobs(logits, labels, mask).item() == pytest.approx(expected, rel=1e-5)
    assert sequence_logprobs(logits, labels, mask, average=True).item() == pytest.approx(expected / 2, rel=1e-5)


def test_mask_excludes_prompt_tokens():
    logits = torch.randn(1, 5, 7)
    labels = torch.randint(0, 7, (1, 5))
    full = sequence_logprobs(logits, labels, torch.tensor([[0, 1, 1, 1, 1]]))
    last_two = sequence_logprobs(logits, labels, torch.tensor([[0, 0, 0, 1, 1]]))
    assert last_two.item() > full.item()  # fewer negative terms


def test_matches_token_by_token_loop():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 6, 11), torch.randint(0, 11, (2, 6))
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1]])
    loop = []
    for b in range(2):
        total = 0.0
        for t in range(1, 6):
            if mask[b, t]:
                total += torch.log_softmax(logits[b, t - 1], -1)[labels[b, t]].item()
        loop.append(total)
    assert sequence_logprobs(logits, labels, mask).tolist() == pytest.approx(loop, rel=1e-5)


def test_empty_completion_is_an_error_not_nan():
    with pytest.raises(ValueError, match="no completion tokens"):
        sequence_logprobs(
            torch.randn(2, 4, 5),
            torch.zeros(2, 4, dtype=torch.long),
            torch.tensor([[0, 1, 1, 0], [0, 0, 0, 0]]),
            average=True,
        )


def _pad(prompt, completion, length, side, pad_id=0):
    ids = prompt + completion
    mask = [1] * len(ids)
    comp = [0] * len(prompt) + [1] * len(completion)
    gap = length - len(ids)
    if side == "left":
        return [pad_id] * gap + ids, [0] * gap + mask, [0] * gap + comp
    return ids + [pad_id] * gap, mask + [0] * gap, comp + [0] * gap


@pytest.mark.parametrize("make_model", [tiny_llama, tiny_gpt2], ids=["rope", "absolute-positions"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_side_does_not_change_logprobs(side, make_model):
    model = make_model()
    rows = [([5, 6, 7], [8, 9, 2]), ([10, 11], [12, 13, 14, 2])]
    alone = torch.cat(
        [
            model_sequence_logprobs(
                model,
                torch.tensor([p + c]),
                torch.ones(1, len(p + c), dtype=torch.long),
                torch.tensor([[0] * len(p) + [1] * len(c)]),
            )
            for p, c in rows
        ]
    )
    padded = [_pad(p, c, 9, side) for p, c in rows]
    ids, attn, comp = (torch.tensor([row[i] for row in padded]) for i in range(3))
    with torch.no_grad():
        batched = model_sequence_logprobs(model, ids, attn, comp)
    assert torch.allclose(batched, alone.detach(), atol=1e-5)
