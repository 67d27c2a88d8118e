"""Every library entry point the GPU-bound notebooks call, under each GPU profile, computes in the
profile's dtype: a forward hook on the LM head records the dtype of its output.

A tiny Llama over a 512-token vocabulary keeps this cheap where the CPU emulates bf16 and fp16
(about 50x slower than fp32 on AVX2 only). On such a CPU ``.ci/gpu-profile`` runs this file and
notebook 08 instead of notebooks 07 to 12 under the profile; a path that drops its autocast, or
ignores the profile, fails here.
"""

import copy
import json

import pytest
import torch

from dpo_utils.best_of_n import evaluate_best_of_n
from dpo_utils.data import prepare_preference_data
from dpo_utils.evaluation import evaluate_policy, heldout_preference_metrics
from dpo_utils.iterative import run_rounds
from dpo_utils.reference import reference_logprobs
from dpo_utils.runtime.config import DATA_DIR
from dpo_utils.runtime.models import ensure_pad_token, pick_device_and_dtype
from dpo_utils.runtime.precision import GPU_PROFILE_VARIABLE
from dpo_utils.sampling import sample_completions
from dpo_utils.trainer import DPOConfig, DPOTrainer
from tests.helpers import small_vocab_chat_tokenizer, tiny_llama

pytestmark = pytest.mark.lowest_versions  # .ci/min-versions runs these

PROFILES = {"bf16": ("bf16", torch.bfloat16), "t4": ("fp16", torch.float16)}


@pytest.fixture(scope="module")
def rows():
    with (DATA_DIR / "sentiment_pairs.jsonl").open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines][:6]


@pytest.fixture(scope="module")
def tokenizer(rows, tokenizer):
    """SmolLM2's chat format over 512 tokens; the ``tokenizer`` it asks for is tests/conftest.py's SmolLM2 one."""
    tok = small_vocab_chat_tokenizer(rows, like=tokenizer)
    ensure_pad_token(tok)
    return tok


@pytest.fixture(scope="module")
def pairs(tokenizer):
    return prepare_preference_data(DATA_DIR / "sentiment_pairs.jsonl", tokenizer, 160, 128)[0][:4]


@pytest.fixture(params=sorted(PROFILES))
def profile(request, monkeypatch):
    """The profile's name, set in the environment as ``.ci/gpu-profile`` sets it."""
    monkeypatch.setenv(GPU_PROFILE_VARIABLE, request.param)
    monkeypatch.delenv("DPO_TUTORIAL_PRESET", raising=False)
    return request.param


class HeadDtypes:
    """The dtypes the model's LM head produced since the last :meth:`take`."""

    def __init__(self, model):
        self.seen = set()
        model.lm_head.register_forward_hook(lambda module, args, output: self.seen.add(output.dtype))

    def take(self) -> set:
        seen, self.seen = self.seen, set()
        return seen


def tiny_model(tokenizer):
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 2)  # as tiny_llama's config says
    return tiny_llama(vocab_size=len(tokenizer), num_hidden_layers=1, max_position_embeddings=512)


def test_training_and_the_reference_pass_follow_the_profile(profile, tokenizer, pairs):
    precision, dtype = PROFILES[profile]
    reference = tiny_model(tokenizer).requires_grad_(False)
    reference_heads = HeadDtypes(reference)
    shared = reference_logprobs(reference, pairs, tokenizer.pad_token_id, DPOConfig(batch_size=2))
    assert shared.mixed_precision == precision and reference_heads.take() == {dtype}
    policy = copy.deepcopy(reference).requires_grad_(True)
    heads = HeadDtypes(policy)
    trainer = DPOTrainer(policy, tokenizer, pairs, DPOConfig(batch_size=2, max_steps=1), None, shared)
    assert trainer.mixed_precision == precision and trainer.scaler.is_enabled() == (profile == "t4")
    trainer.train_step()
    assert heads.take() == {dtype}
    assert all(p.dtype == torch.float32 for p in policy.parameters())  # master weights stay fp32


def test_sampling_evaluation_and_best_of_n_follow_the_profile(profile, tokenizer, rows, pairs):
    dtype = PROFILES[profile][1]
    policy, reference = tiny_model(tokenizer), tiny_model(tokenizer)
    heads, reference_heads = HeadDtypes(policy), HeadDtypes(reference)
    prompts = [row["prompt"] for row in rows[:2]]
    padding_side = tokenizer.padding_side
    sample_completions(policy, tokenizer, prompts, max_new_tokens=3)
    assert heads.take() == {dtype}
    result = evaluate_policy(policy, reference, tokenizer, prompts, n_samples=1, max_new_tokens=3)
    assert heads.take() == {dtype} and reference_heads.take() == {dtype} and len(result["per_sample"]["reward"]) == 2
    heldout_preference_metrics(policy, pairs, tokenizer.pad_token_id, 0.1, reference)
    assert heads.take() == {dtype} and reference_heads.take() == {dtype}
    evaluate_best_of_n(reference, tokenizer, prompts, 2, [1, 2], max_new_tokens=3)
    assert reference_heads.take() == {dtype}
    tokenizer.padding_side = padding_side  # sample_completions pads on the left


def test_iterative_rounds_and_frozen_models_follow_the_profile(profile, tokenizer, rows, tmp_path):
    precision, dtype = PROFILES[profile]
    assert pick_device_and_dtype("cpu")[1] == dtype  # judges, frozen references and LoRA bases
    reference = tiny_model(tokenizer).requires_grad_(False)
    policy = copy.deepcopy(reference).requires_grad_(True)
    heads = HeadDtypes(policy)
    config = DPOConfig(batch_size=2, max_steps=1, save_final_model=False)
    summary = run_rounds(policy, reference, tokenizer, rows[:2], None, [config], tmp_path)
    assert summary[0]["history"][0]["step"] == 1 and heads.take() == {dtype}
