"""Each speed-up must leave the loss and the gradients unchanged (to float tolerance)."""

import pytest
import torch

from dpo_utils.logprobs import completion_logprobs_lean, model_sequence_logprobs
from tests.helpers import tiny_gpt2, tiny_llama


def batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 60, (4, 12), generator=gen)
    attention = torch.ones_like(ids)
    attention[1, -3:] = 0  # right padding
    attention[2, :2] = 0   # left padding
    completion = torch.zeros_like(ids)
    completion[0, 5:] = 1
    completion[1, 4:9] = 1
    completion[2, 7:] = 1
    completion[3, 10:] = 1
    return ids, attention, completion


@pytest.mark.parametrize("make_model", [tiny_llama, tiny_gpt2])
@pytest.mark.parametrize("chunk_size", [3, 1024])
def test_lean_logprobs_match_full_logits_in_value_and_gradient(make_model, chunk_size):
    ids, attention, completion = batch()
    results = []
    for fn in (lambda m: model_sequence_logprobs(m, ids, attention, completion),
               lambda m: completion_logprobs_lean(m, ids, attention, completion, chunk_size=chunk_size)):
        model = make_model()
        logps = fn(model)
        (logps * torch.tensor([1.0, -2.0, 0.5, 3.0])).sum().backward()
        results.append((logps.detach(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-5)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-5)


@pytest.mark.parametrize("speedup", [{"lean_logits": True}, {"lean_logits": True, "share_prompt": True},
                                     {"fused_adamw": True}, {"compile": True}], ids=["lean", "shared", "fused-adamw", "compile"])
def test_training_step_is_the_same_with_each_speedup(speedup):
    from dpo_utils.trainer import DPOConfig, DPOTrainer
    from tests.helpers import TinyTokenizer, make_pairs

    models = []
    baseline = {"share_prompt": False, "lean_logits": False, "fused_adamw": False, "compile": False}
    for options in (baseline, baseline | speedup):
        model = tiny_llama()
        trainer = DPOTrainer(model, TinyTokenizer(), make_pairs(), DPOConfig(beta=0.5, learning_rate=1e-2, **options))
        rows = [trainer.train_step() for _ in range(2)]
        models.append((model, rows[-1]["loss"]))
    assert abs(models[0][1] - models[1][1]) < 1e-5
    if speedup.get("compile"):
        assert models[1][0].get_decoder()._compiled_call_impl is not None  # the compiled decoder really ran
    for p, q in zip(models[0][0].parameters(), models[1][0].parameters()):
        assert torch.allclose(p, q, atol=1e-5)


@pytest.mark.parametrize("make_model", [tiny_llama, tiny_gpt2])
def test_shared_prompt_matches_two_full_sequences_in_value_and_gradient(make_model):
    from dpo_utils.data import TokenizedPair, collate_pairs, collate_shared_prompt
    from dpo_utils.logprobs import shared_prompt_logprobs

    pairs = [TokenizedPair([5, 6, 7], [8, 9, 2], [10, 2]), TokenizedPair([11], [12, 13, 14, 15, 2], [16, 17, 2])]
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0])
    full, shared = make_model(), make_model()
    batch = collate_pairs(pairs, 0)
    a = model_sequence_logprobs(full, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    s = collate_shared_prompt(pairs, 0)
    b = shared_prompt_logprobs(shared, s["prompt_ids"], s["prompt_mask"], s["completion_ids"], s["completion_mask"], chunk_size=3)
    (a * weights).sum().backward()
    (b * weights).sum().backward()
    assert torch.allclose(a, b, atol=1e-5)
    for p, q in zip(full.parameters(), shared.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5)
