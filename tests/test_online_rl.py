"""GRPO with TRL on a tiny random Llama: steps logged, reward and KL per step, checkpoints that reload exactly."""

import statistics
import warnings

import pytest
import torch
from transformers import TrainerCallback

from dpo_utils.online_rl import (
    describe_settings_against_trl,
    grpo_config,
    load_checkpoint_weights,
    saved_checkpoints,
    settings_against_trl,
    train_grpo,
)
from dpo_utils.runtime.config import DATA_DIR
from dpo_utils.sentiment import load_prompts
from tests.helpers import ONE_LAYER_WIDTH_16, tiny_llama, token_ids_of

pytestmark = pytest.mark.lowest_versions  # .ci/min-versions runs these

RUN = dict(steps=3, save_every=2, prompts_per_step=2, num_generations=4, micro_batch_size=2)
RUN |= dict(max_completion_length=8, learning_rate=1e-2, beta=0.04)


def tiny_model(tokenizer, layers=1):
    """Tied embeddings (the helper's default), as in SmolLM2: the LM head is not saved on its own."""
    return tiny_llama(0, **token_ids_of(tokenizer), **ONE_LAYER_WIDTH_16 | dict(num_hidden_layers=layers))


def weights(model):
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


class RecordingReward:
    """Counts the letter e (random tiny models write no sentiment words) and keeps what it saw and gave."""

    __name__ = "count_e"

    def __init__(self):
        self.calls = []

    def __call__(self, texts):
        rewards = [text.count("e") / 10 for text in texts]
        self.calls.append((texts, rewards))
        return rewards


class WeightsAtEachStep(TrainerCallback):
    def __init__(self):
        self.at = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.at[state.global_step] = weights(model)


@pytest.fixture(scope="module")
def prompts():
    return load_prompts(DATA_DIR / "movie_review_prompts.jsonl", "train")[:4]


@pytest.fixture(scope="module")
def run(tokenizer, prompts, tmp_path_factory):
    model = tiny_model(tokenizer)
    start = weights(model)
    reward, snapshots = RecordingReward(), WeightsAtEachStep()
    out = tmp_path_factory.mktemp("grpo")
    rows = train_grpo(model, tokenizer, prompts, reward, out, callbacks=[snapshots], **RUN)
    return dict(model=model, start=start, reward=reward, at=snapshots.at, rows=rows, out=out)


def test_each_step_logs_the_reward_it_was_given_and_a_kl(run):
    rows, calls = run["rows"], run["reward"].calls
    assert [row["step"] for row in rows] == [1, 2, 3]
    assert len(calls) == 3  # one sampling per optimizer step: on-policy
    for row, (_, rewards) in zip(rows, calls):
        assert row["reward"] == pytest.approx(statistics.fmean(rewards), abs=1e-6)
        assert row["rewards/count_e/mean"] == row["reward"]
        assert {"loss", "entropy", "completions/mean_length"} <= row.keys()
    # the reference is the starting model: no KL before the first update, some after three
    assert abs(rows[0]["kl"]) < 1e-6
    assert rows[-1]["kl"] > 1e-5


def test_the_reward_function_gets_completion_texts(run, prompts):
    prompt_texts = [prompt[-1]["content"] for prompt in prompts]
    for texts, _ in run["reward"].calls:
        assert len(texts) == RUN["prompts_per_step"] * RUN["num_generations"]
        assert all(isinstance(text, str) and text for text in texts) and len(set(texts)) > 1
        assert not any(prompt in text for prompt in prompt_texts for text in texts)  # the completion alone


def test_checkpoints_are_written_at_the_requested_steps_and_the_last(run):
    checkpoints = saved_checkpoints(run["out"])
    assert [step for step, _ in checkpoints] == [0, 2, 3]
    assert all(
        (path / "config.json").exists() and (path / "tokenizer_config.json").exists() for _, path in checkpoints
    )


def test_reloaded_checkpoints_hold_the_weights_of_their_step(run, tokenizer):
    fresh = tiny_model(tokenizer)
    for step, path in saved_checkpoints(run["out"]):
        loaded = weights(load_checkpoint_weights(fresh, path))
        expected = run["start"] if step == 0 else run["at"][step]
        assert loaded.keys() == expected.keys()
        assert all(torch.equal(loaded[name], expected[name]) for name in expected), step
        if step:
            moved = [name for name in expected if not torch.equal(loaded[name], run["start"][name])]
            assert "model.embed_tokens.weight" in moved and len(moved) >= len(expected) // 2
    assert not all(torch.equal(run["at"][2][name], run["at"][3][name]) for name in run["start"])


def test_the_callers_model_is_not_trained(run):
    now = weights(run["model"])
    assert all(torch.equal(now[name], run["start"][name]) for name in now)


def test_sampling_is_at_temperature_one_without_truncation_and_on_policy(tmp_path):
    args = grpo_config(
        tmp_path,
        **{key: RUN[key] for key in ("beta", "num_generations", "max_completion_length", "steps", "learning_rate")},
        prompts_per_step=8,
        micro_batch_size=4,
        save_every=1,
        scale_rewards="group",
        loss_type="dapo",
        seed=0,
        use_cpu=True,
    )
    assert (args.temperature, args.top_k, args.top_p, args.min_p) == (1.0, 0, 1.0, None)
    assert args.repetition_penalty == 1.0 and args.generation_kwargs is None
    assert args.generation_batch_size == 8 * 4 and args.per_device_train_batch_size == 4
    assert args.steps_per_generation == args.gradient_accumulation_steps == 8 and args.num_iterations == 1
    assert not args.bf16 and not args.gradient_checkpointing


def test_a_run_prints_nothing_and_warns_nothing(tokenizer, prompts, tmp_path, capfd):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # what a notebook shows: each warning once, library deprecations hidden
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
        rows = train_grpo(tiny_model(tokenizer), tokenizer, prompts, RecordingReward(), tmp_path, **RUN | {"steps": 1})
    assert len(rows) == 1
    assert [str(w.message) for w in caught] == []
    assert capfd.readouterr() == ("", "")


def test_an_earlier_runs_checkpoints_are_not_mixed_in(tokenizer, prompts, tmp_path):
    (tmp_path / "checkpoint-5").mkdir()
    with pytest.raises(FileExistsError, match="checkpoint-5; pass overwrite=True"):
        train_grpo(tiny_model(tokenizer), tokenizer, prompts, RecordingReward(), tmp_path, **RUN)


def test_micro_batches_must_divide_the_completions_of_a_step(tokenizer, prompts, tmp_path):
    with pytest.raises(ValueError, match="micro_batch_size=3 must divide 8"):
        train_grpo(
            tiny_model(tokenizer), tokenizer, prompts, RecordingReward(), tmp_path, **RUN | {"micro_batch_size": 3}
        )


def test_a_checkpoint_does_not_load_into_another_architecture(run, tokenizer):
    _, path = saved_checkpoints(run["out"])[-1]
    with pytest.raises(ValueError, match="does not fit the model: absent .'model.layers.1"):
        load_checkpoint_weights(tiny_model(tokenizer, layers=2), path)


def test_the_departures_from_trls_defaults_are_listed_and_only_those(tmp_path):
    settings = dict(num_generations=4, max_completion_length=128, steps=2, prompts_per_step=8, micro_batch_size=4)
    args = grpo_config(
        tmp_path,
        beta=0.04,
        learning_rate=1e-5,
        save_every=1,
        scale_rewards="group",
        loss_type="dapo",
        seed=0,
        use_cpu=True,
        **settings,
    )
    departures = {name: (ours, default) for name, ours, default in settings_against_trl(args)}
    assert departures["beta"] == (0.04, 0.0) and departures["learning_rate"] == (1e-5, 1e-6)
    assert departures["num_generations"] == (4, 8) and departures["max_completion_length"] == (128, 512)
    assert "loss_type" not in departures and "scale_rewards" not in departures  # TRL's own defaults here
    table = describe_settings_against_trl(args)
    assert table.splitlines()[0].startswith("setting") and len(table.splitlines()) == len(departures) + 1
