"""Iterative DPO: pairs from ranked samples, and a round loop that resumes after an interruption."""

import copy
import json

import pytest
import torch

from dpo_utils.checkpoints import StaleCheckpointError, UnsafeCheckpointError
from dpo_utils.data import prepare_preference_data
from dpo_utils.iterative import on_policy_rows, run_rounds
from dpo_utils.pairing import best_vs_worst_rows
from dpo_utils.reference import ReferenceLogprobs, reference_logprobs
from dpo_utils.sampling import Sample
from dpo_utils.trainer import DPOConfig, DPOTrainer
from tests.helpers import ONE_LAYER_WIDTH_16, plant_checkpoint, tiny_llama, token_ids_of

PROMPTS = [[{"role": "user", "content": f"Review film {k}."}] for k in range(3)]


def pairs_of(rows):
    return [(row["chosen"][0]["content"], row["rejected"][0]["content"]) for row in rows]


def test_best_sample_is_paired_with_the_worst_one_per_prompt():
    samples = [
        Sample(0, None, None, "great"),
        Sample(0, None, None, "fine"),
        Sample(0, None, None, "awful"),
        Sample(1, None, None, "good"),
        Sample(1, None, None, "bad"),
    ]
    rows = best_vs_worst_rows(PROMPTS, samples, [0.9, 0.2, -0.7, 0.5, -0.5])
    assert pairs_of(rows) == [("great", "awful"), ("good", "bad")]
    assert rows[0]["prompt"] == PROMPTS[0] and rows[1]["score_chosen"] == 0.5


def test_ties_and_prompts_without_two_distinct_samples_give_no_pair():
    samples = [
        Sample(0, None, None, "tied a"),
        Sample(0, None, None, "tied b"),  # best and worst tied
        Sample(1, None, None, "only one"),
        Sample(1, None, None, "only one"),  # one distinct text
        Sample(2, None, None, "lonely"),
        Sample(2, None, None, "  "),
    ]  # the other one empty
    for min_gap in (0.0, 0.1):
        assert best_vs_worst_rows(PROMPTS, samples, [0.4, 0.4, 0.9, 0.9, 0.3, -0.9], min_gap=min_gap) == []
    # a gap below min_gap is dropped, the same gap above it is kept
    close = [Sample(0, None, None, "a"), Sample(0, None, None, "b")]
    assert best_vs_worst_rows(PROMPTS, close, [0.30, 0.25], min_gap=0.1) == []
    assert pairs_of(best_vs_worst_rows(PROMPTS, close, [0.30, 0.25], min_gap=0.0)) == [("a", "b")]
    with pytest.raises(ValueError):
        best_vs_worst_rows(PROMPTS, close, [0.3, 0.2], min_gap=-1)


def tiny_model(tokenizer):
    return tiny_llama(0, **token_ids_of(tokenizer), **ONE_LAYER_WIDTH_16, max_position_embeddings=256)


def length_reward(texts):
    return [len(text) / 100 for text in texts]  # deterministic, and samples of a random model differ in length


FIRST_ROWS = [
    {
        "prompt": PROMPTS[k],
        "chosen": [{"role": "assistant", "content": f"A fine film, number {k}."}],
        "rejected": [{"role": "assistant", "content": "Dull."}],
    }
    for k in range(3)
]


def run(policy, reference, tokenizer, folder, first_reference_logps=None):
    make_rows = lambda current, r: on_policy_rows(
        current, tokenizer, PROMPTS, length_reward, 4, 8, seed=100 + r, min_gap=0.0, keep_capped=True
    )
    configs = [
        DPOConfig(
            beta=0.1, learning_rate=1e-2, batch_size=2, max_steps=3, save_every=1, seed=r, save_final_model=False
        )
        for r in range(3)
    ]
    return run_rounds(
        policy,
        reference,
        tokenizer,
        FIRST_ROWS,
        make_rows,
        configs,
        folder,
        max_completion_length=12,
        first_reference_logps=first_reference_logps,
    )


def test_an_interrupted_round_resumes_and_ends_where_an_uninterrupted_loop_does(tokenizer, tmp_path, monkeypatch):
    reference = tiny_model(tokenizer).requires_grad_(False)
    straight = copy.deepcopy(reference).requires_grad_(True)
    summaries = run(straight, reference, tokenizer, tmp_path / "straight")
    assert [s["round"] for s in summaries] == [0, 1, 2] and all(s["pairs"] >= 1 for s in summaries)
    assert not torch.equal(straight.lm_head.weight, reference.lm_head.weight)

    # round 0 starts at the reference: loss log 2; later rounds start elsewhere but keep the same reference
    assert abs(summaries[0]["history"][0]["loss"] - 0.6931) < 1e-3
    assert abs(summaries[1]["history"][0]["rewards/margins"]) > 1e-6

    # interrupt round 1 after its second optimizer step
    real_step = DPOTrainer.train_step

    def crashing_step(self):
        if self.config.seed == 1 and self.step == 2:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(DPOTrainer, "train_step", crashing_step)
    first_try = copy.deepcopy(reference).requires_grad_(True)
    with pytest.raises(KeyboardInterrupt):
        run(first_try, reference, tokenizer, tmp_path / "resumed")
    assert (tmp_path / "resumed" / "round_0" / "round.json").exists()
    assert not (tmp_path / "resumed" / "round_1" / "round.json").exists()
    monkeypatch.setattr(DPOTrainer, "train_step", real_step)

    # a fresh start (a restarted kernel): round 0 is loaded, round 1 resumes at step 2, round 2 runs
    restarted = copy.deepcopy(reference).requires_grad_(True)
    resumed = run(restarted, reference, tokenizer, tmp_path / "resumed")
    for name, weight in straight.state_dict().items():
        assert torch.allclose(weight, restarted.state_dict()[name], atol=1e-6), name
    assert [s["pairs"] for s in resumed] == [s["pairs"] for s in summaries]
    assert (
        json.loads((tmp_path / "resumed" / "round_1" / "round.json").read_text())["history"] == summaries[1]["history"]
    )


def test_round_zero_uses_given_reference_logprobs(tokenizer, tmp_path):
    """Round 0 takes reference log-probs computed elsewhere; they decide its first loss."""
    reference = tiny_model(tokenizer).requires_grad_(False)
    pairs, _ = prepare_preference_data(FIRST_ROWS, tokenizer, 128, 12)
    config = DPOConfig(beta=0.1, batch_size=2, seed=0)
    given = reference_logprobs(reference, pairs, tokenizer.pad_token_id, config)
    computed = run(copy.deepcopy(reference).requires_grad_(True), reference, tokenizer, tmp_path / "a", given)
    assert abs(computed[0]["history"][0]["loss"] - 0.6931) < 1e-3

    shifted = ReferenceLogprobs(given.values + torch.tensor([0.0, 5.0]), given.mixed_precision)  # rejected +5 nats
    moved = run(copy.deepcopy(reference).requires_grad_(True), reference, tokenizer, tmp_path / "b", shifted)
    expected = torch.nn.functional.softplus(torch.tensor(-0.1 * 5.0)).item()  # -log sigmoid(beta * 5)
    assert abs(moved[0]["history"][0]["loss"] - expected) < 1e-3


def test_a_planted_checkpoint_of_a_finished_round_is_refused_without_running_it(tokenizer, tmp_path):
    """A finished round's weights are read with weights_only=True: a planted state.pt runs nothing."""
    marker, round_0 = tmp_path / "ran", tmp_path / "loop" / "round_0"
    plant_checkpoint(round_0 / "checkpoint", marker)
    (round_0 / "round.json").write_text("{}")
    reference = tiny_model(tokenizer).requires_grad_(False)
    with pytest.raises(UnsafeCheckpointError, match=f"{round_0 / 'checkpoint' / 'state.pt'} is not a checkpoint"):
        run(copy.deepcopy(reference).requires_grad_(True), reference, tokenizer, tmp_path / "loop")
    assert not marker.exists()


def test_a_finished_round_from_another_starting_policy_is_refused(tokenizer, tmp_path):
    """Finished rounds are loaded only into the policy they started from (fingerprint-checked)."""
    reference = tiny_model(tokenizer).requires_grad_(False)
    run(copy.deepcopy(reference).requires_grad_(True), reference, tokenizer, tmp_path)
    other = copy.deepcopy(reference).requires_grad_(True)
    with torch.no_grad():
        other.lm_head.weight.add_(0.01)
    with pytest.raises(StaleCheckpointError, match="round_0.*another starting model"):
        run(other, reference, tokenizer, tmp_path)
