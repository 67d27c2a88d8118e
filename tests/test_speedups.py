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
    attention[2, :2] = 0  # left padding
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
    for fn in (
        lambda m: model_sequence_logprobs(m, ids, attention, completion),
        lambda m: completion_logprobs_lean(m, ids, attention, completion, chunk_size=chunk_size),
    ):
        model = make_model()
        logps = fn(model)
        (logps * torch.tensor([1.0, -2.0, 0.5, 3.0])).sum().backward()
        results.append(
            (logps.detach(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        )
    assert torch.allclose(results[0][0], results[1][0], atol=1e-5)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-5)


@pytest.mark.parametrize(
    "speedup",
    [
        {"logprob_mode": "lean"},
        {"logprob_mode": "shared"},
        {"fused_adamw": True},
        pytest.param(
            {"compile": True},
            # torch 2.13's own compile stack calls torch.jit.script_method, which it has deprecated
            marks=pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
        ),
        {"logprob_mode": "packed-unshared"},
        {"logprob_mode": "packed"},
        {"logprob_mode": "auto", "checkpointing": True},
        {"logprob_mode": "packed", "checkpointing": True},
    ],
    ids=[
        "lean",
        "shared",
        "fused-adamw",
        "compile",
        "padding-free",
        "padding-free-shared",
        "auto-checkpointed",
        "padding-free-shared-checkpointed",
    ],
)
def test_training_step_is_the_same_with_each_speedup(speedup, monkeypatch):
    import dpo_utils.logprob_modes
    import dpo_utils.packing
    from dpo_utils.trainer import DPOConfig, DPOTrainer
    from tests.helpers import TinyTokenizer, make_pairs

    packed_calls = []
    packed = dpo_utils.packing.packed_pair_logprobs
    spy = lambda *args, **kwargs: packed_calls.append(1) or packed(*args, **kwargs)
    monkeypatch.setattr(dpo_utils.packing, "packed_pair_logprobs", spy)
    monkeypatch.setattr(dpo_utils.logprob_modes, "packed_pair_logprobs", spy)
    models = []
    baseline = {"logprob_mode": "full", "fused_adamw": False, "compile": False}
    for options in (baseline, baseline | speedup):
        options = dict(options)
        model = tiny_llama()
        if options.pop("checkpointing", False):  # transformers' own switch, the one the trainer's option turns on
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            enable({"use_reentrant": False})
        trainer = DPOTrainer(model, TinyTokenizer(), make_pairs(), DPOConfig(beta=0.5, learning_rate=1e-2, **options))
        rows = [trainer.train_step() for _ in range(2)]
        models.append((model, rows[-1]["loss"]))
    assert abs(models[0][1] - models[1][1]) < 1e-5
    assert bool(packed_calls) == bool(
        speedup.get("logprob_mode", "").startswith("packed") or speedup.get("checkpointing")
    )  # the packed path ran
    if speedup.get("compile"):
        assert models[1][0].get_decoder()._compiled_call_impl is not None  # the compiled decoder really ran
    # AdamW moves every weight by about lr = 1e-2 a step whatever its gradient's size, so float
    # noise in a near-zero gradient shows up to ~2e-5 in the weights; a wrong speed-up moves them by ~1e-2
    for p, q in zip(models[0][0].parameters(), models[1][0].parameters()):
        assert torch.allclose(p, q, atol=1e-4)


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
    b = shared_prompt_logprobs(
        shared, s["prompt_ids"], s["prompt_mask"], s["completion_ids"], s["completion_mask"], chunk_size=3
    )
    (a * weights).sum().backward()
    (b * weights).sum().backward()
    assert torch.allclose(a, b, atol=1e-5)
    for p, q in zip(full.parameters(), shared.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5)


# --- padding-free (packed) batches, prompt sharing under checkpointing, decoder lookup ---

from dpo_utils.data import TokenizedPair, collate_pairs  # noqa: E402

pytestmark = pytest.mark.lowest_versions  # .ci/min-versions runs these


def uneven_pairs():
    """Prompts and completions of different lengths, so padding would be needed."""
    return [
        TokenizedPair([5, 6, 7], [8, 9, 2], [10, 2]),
        TokenizedPair([11], [12, 13, 14, 15, 2], [16, 17, 2]),
        TokenizedPair([20, 21, 22, 23, 24, 25], [26, 2], [27, 28, 29, 30, 31, 32, 2]),
        TokenizedPair([33, 34], [2], [35, 2]),
    ]


def value_and_grads(model, fn, weights):
    logps = fn(model)
    (logps * weights).sum().backward()
    return logps.detach(), [p.grad.clone() for p in model.parameters()]


def reference(make_model, pairs):
    batch = collate_pairs(pairs, 0)
    weights = torch.linspace(-2.0, 3.0, 2 * len(pairs))
    return weights, value_and_grads(
        make_model(),
        lambda m: model_sequence_logprobs(m, batch["input_ids"], batch["attention_mask"], batch["completion_mask"]),
        weights,
    )


def assert_same(a, b):
    assert torch.allclose(a[0], b[0], atol=1e-5), (a[0], b[0])
    for g, h in zip(a[1], b[1]):
        assert torch.allclose(g, h, atol=1e-5)


def eager_llama():
    model = tiny_llama()
    model.set_attn_implementation("eager")
    return model


@pytest.mark.parametrize("make_model", [tiny_llama, tiny_gpt2, eager_llama], ids=["llama-sdpa", "gpt2", "llama-eager"])
@pytest.mark.parametrize("share_prompt", [True, False], ids=["shared", "separate"])
@pytest.mark.parametrize("row_length", [None, 64], ids=["rows-of-longest-unit", "one-row"])
def test_packed_batch_matches_padded_sequences_in_value_and_gradient(make_model, share_prompt, row_length):
    from dpo_utils.packing import pack_pairs, packed_pair_logprobs

    pairs = uneven_pairs()
    weights, expected = reference(make_model, pairs)
    packed = pack_pairs(pairs, share_prompt=share_prompt, row_length=row_length)
    if row_length:
        assert packed.input_ids.shape[0] == 1  # all sequences in one row: only the mask keeps them apart
    assert_same(
        expected, value_and_grads(make_model(), lambda m: packed_pair_logprobs(m, packed, chunk_size=3), weights)
    )


def test_packing_computes_fewer_tokens_and_keeps_sequences_apart():
    from dpo_utils.packing import pack_pairs, packed_pair_logprobs

    pairs = uneven_pairs()
    padded = collate_pairs(pairs, 0)["input_ids"].numel()
    separate, shared = pack_pairs(pairs, share_prompt=False), pack_pairs(pairs, share_prompt=True)
    prompts = sum(len(p.prompt_ids) for p in pairs)
    assert (
        separate.real.sum()
        == sum(2 * len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
        < padded
    )
    assert shared.real.sum() == separate.real.sum() - prompts
    assert shared.completion_mask.sum(-1).tolist() == [len(p.chosen_ids) for p in pairs] + [
        len(p.rejected_ids) for p in pairs
    ]
    # changing one pair leaves the others' log-probs as they were, though they share a row
    model = tiny_llama()
    before = packed_pair_logprobs(model, pack_pairs(pairs, row_length=64))
    changed = [TokenizedPair([40, 41, 42], [43, 44, 2], [45, 2])] + pairs[1:]
    after = packed_pair_logprobs(model, pack_pairs(changed, row_length=64))
    keep = torch.tensor([1, 2, 3, 5, 6, 7])
    assert torch.allclose(before[keep], after[keep], atol=1e-6) and not torch.allclose(before[0], after[0])


@pytest.mark.parametrize("make_model", [tiny_llama, tiny_gpt2])
def test_prompt_sharing_under_activation_checkpointing_runs_packed_and_the_kv_cache_way_is_refused(make_model):
    """A prompt's KV cache cannot live through checkpointing: the shared layout says so, the packed one
    (each prompt still computed once) gives the same values and gradients."""
    from dpo_utils.data import collate_shared_prompt
    from dpo_utils.logprobs import checkpointing_active, shared_prompt_logprobs
    from dpo_utils.packing import pack_pairs, packed_pair_logprobs

    pairs = uneven_pairs()
    weights, expected = reference(make_model, pairs)
    model = make_model()
    enable = (
        getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    )  # 5.x / 4.x name
    enable({"use_reentrant": False})
    model.train()
    for module in model.modules():  # train mode without dropout (GPT-2 has some), so it equals eval mode
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    assert checkpointing_active(model)
    with pytest.raises(ValueError, match="activation checkpointing cannot keep.*packed"):
        shared_prompt_logprobs(model, *collate_shared_prompt(pairs, 0).values())
    packed = pack_pairs(pairs, share_prompt=True)
    assert_same(expected, value_and_grads(model, lambda m: packed_pair_logprobs(m, packed, chunk_size=3), weights))


def test_lean_logprobs_use_the_body_when_get_decoder_returns_the_whole_model():
    """Before transformers 5.0, GPT-2's get_decoder() returned the LM itself (no last_hidden_state)."""
    from dpo_utils.logprobs import decoder_of

    pairs = uneven_pairs()
    weights, expected = reference(tiny_gpt2, pairs)
    model = tiny_gpt2()
    model.get_decoder = lambda: model
    assert decoder_of(model) is model.transformer
    batch = collate_pairs(pairs, 0)
    args = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    assert_same(expected, value_and_grads(model, lambda m: completion_logprobs_lean(m, *args, chunk_size=3), weights))


# --- logprob_mode="auto": shared or packed per batch, by padding; same numbers as every mode ---


def varied_pair(k):
    """One pair whose completions differ widely in length: the shared layout pads the short one."""
    return TokenizedPair([3 + k, 4, 5], [6 + k, 2], [7 + k, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 2])


def test_auto_mode_shares_equal_lengths_and_packs_widely_varying_ones():
    from dpo_utils.logprob_modes import resolve_logprob_mode
    from tests.helpers import make_pairs

    equal = make_pairs()  # every pair 4 + 4 + 6 tokens: packing would save 1/8 of the positions
    varied = uneven_pairs() + [varied_pair(k) for k in range(4)]
    assert resolve_logprob_mode("auto", equal) == "shared"
    assert resolve_logprob_mode("auto", varied) == "packed"
    assert resolve_logprob_mode("auto", [varied_pair(0)]) == "packed"
    assert resolve_logprob_mode("auto", equal, checkpointing=True) == "packed"  # no KV cache under checkpointing
    assert resolve_logprob_mode("lean", varied) == "lean"  # an explicit mode is kept
    with pytest.raises(ValueError, match="logprob_mode='shared' keeps"):
        resolve_logprob_mode("shared", equal, checkpointing=True)


def test_auto_mode_trains_as_every_explicit_mode(monkeypatch):
    """One pair per micro-batch: pairs of equal lengths run shared, the others packed, within one step."""
    import dpo_utils.logprob_modes
    from dpo_utils.trainer import DPOConfig, DPOTrainer
    from tests.helpers import TinyTokenizer, make_pairs

    pairs = [p for both in zip(make_pairs(4), [varied_pair(k) for k in range(4)]) for p in both]
    modes = []
    run = dpo_utils.logprob_modes.logprobs_of_batch
    monkeypatch.setattr(
        dpo_utils.logprob_modes,
        "logprobs_of_batch",
        lambda model, batch, mode, *a: modes.append(mode) or run(model, batch, mode, *a),
    )
    results = {}
    for mode in ("full", "shared", "packed", "auto"):
        modes.clear()
        model = tiny_llama()
        config = DPOConfig(beta=0.5, learning_rate=1e-2, batch_size=8, micro_batch_size=1, logprob_mode=mode)
        trainer = DPOTrainer(model, TinyTokenizer(), pairs, config)
        rows = [trainer.train_step() for _ in range(2)]
        results[mode] = (rows[-1]["loss"], model)
        assert set(modes) == ({"shared", "packed"} if mode == "auto" else {mode})  # reference pass and training
    for mode in ("shared", "packed", "auto"):
        assert abs(results[mode][0] - results["full"][0]) < 1e-5
        for p, q in zip(results["full"][1].parameters(), results[mode][1].parameters()):
            assert torch.allclose(p, q, atol=1e-4)


@pytest.mark.parametrize("mode", ["auto", "lean", "shared", "packed", "packed-unshared"])
def test_reference_logprobs_are_the_same_in_every_mode(mode):
    from dpo_utils.reference import compute_reference_logprobs

    pairs = uneven_pairs() + [varied_pair(0)]
    full = compute_reference_logprobs(tiny_llama(), pairs, 0, batch_size=2, mode="full")
    assert torch.allclose(compute_reference_logprobs(tiny_llama(), pairs, 0, batch_size=2, mode=mode), full, atol=1e-5)
