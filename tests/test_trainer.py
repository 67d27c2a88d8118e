import pytest
import torch

from dpo_utils.checkpoints import StaleCheckpointError
from dpo_utils.logprob_modes import batch_logprobs
from dpo_utils.losses import dpo_loss
from dpo_utils.trainer import DPOConfig, DPOTrainer
from tests.helpers import TinyTokenizer, make_pairs, tiny_llama

pytestmark = pytest.mark.lowest_versions  # .ci/min-versions runs these


def batch_loss(model, pairs, ref):
    with torch.no_grad():
        chosen, rejected, _ = batch_logprobs(model, pairs, 0)
    return dpo_loss(chosen, rejected, ref[:, 0], ref[:, 1], beta=0.5).losses.mean().item()


def test_one_step_lowers_the_dpo_loss_on_its_batch():
    model, pairs = tiny_llama(), make_pairs()
    trainer = DPOTrainer(
        model, TinyTokenizer(), pairs, DPOConfig(beta=0.5, learning_rate=1e-2, batch_size=8, max_steps=1)
    )
    trainer.ensure_reference_logps()
    before = batch_loss(model, pairs, trainer.reference_logps.values)
    row = trainer.train_step()
    assert abs(row["loss"] - before) < 1e-5 and abs(before - 0.6931) < 1e-3  # starts at log 2
    assert batch_loss(model, pairs, trainer.reference_logps.values) < before - 1e-3


def test_accumulation_matches_one_big_batch():
    grads = []
    for micro in (8, 2):
        model = tiny_llama()
        trainer = DPOTrainer(model, TinyTokenizer(), make_pairs(), DPOConfig(batch_size=8, micro_batch_size=micro))
        trainer.ensure_reference_logps()
        trainer.accumulate_gradients(list(range(8)))  # gradients only, no update
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert grads[0].abs().max() > 0 and torch.allclose(grads[0], grads[1], atol=1e-6)


def test_interrupted_run_resumes_and_ends_where_an_uninterrupted_one_ends(tmp_path):
    config = DPOConfig(beta=0.5, learning_rate=1e-2, batch_size=4, max_steps=4, save_every=2, warmup_steps=2)
    straight = tiny_llama()
    DPOTrainer(straight, TinyTokenizer(), make_pairs(), config, output_dir=tmp_path / "a").train()

    crashing = DPOTrainer(tiny_llama(), TinyTokenizer(), make_pairs(), config, output_dir=tmp_path / "b")
    step = crashing.train_step
    crashing.train_step = lambda: (_ for _ in ()).throw(KeyboardInterrupt) if crashing.step == 3 else step()
    with pytest.raises(KeyboardInterrupt):  # killed during step 4; the checkpoint of step 2 survives
        crashing.train()
    second = tiny_llama()  # a new process would start from the original weights
    trainer = DPOTrainer(second, TinyTokenizer(), make_pairs(), config, output_dir=tmp_path / "b")
    history = trainer.train()
    assert [row["step"] for row in history] == [1, 2, 3, 4]
    for p, q in zip(straight.parameters(), second.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_final_model_reloads_with_transformers(tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny_llama()
    DPOTrainer(
        model, TinyTokenizer(), make_pairs(), DPOConfig(max_steps=1, learning_rate=1e-2), output_dir=tmp_path
    ).train()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    ids = torch.tensor([[5, 6, 7]])
    assert torch.allclose(model(ids).logits, reloaded(ids).logits, atol=1e-6)


def test_sft_objective_raises_chosen_likelihood():
    model, pairs = tiny_llama(), make_pairs()
    trainer = DPOTrainer(model, TinyTokenizer(), pairs, DPOConfig(objective="sft", learning_rate=1e-2, max_steps=3))
    first = trainer.train_step()["logps/chosen"]
    trainer.train_step()
    assert trainer.train_step()["logps/chosen"] > first


def test_a_finished_run_keeps_no_optimizer_state_and_can_still_be_extended(tmp_path, capsys):
    config = DPOConfig(beta=0.5, learning_rate=1e-2, batch_size=4, max_steps=2, save_final_model=False)
    DPOTrainer(tiny_llama(), TinyTokenizer(), make_pairs(), config, output_dir=tmp_path).train()
    state = torch.load(tmp_path / "checkpoint" / "state.pt", weights_only=True)
    assert state["optimizer"] is None and state["step"] == 2 and not (tmp_path / "final").exists()
    longer = DPOConfig(**{**config.__dict__, "max_steps": 3})
    history = DPOTrainer(tiny_llama(), TinyTokenizer(), make_pairs(), longer, output_dir=tmp_path).train()
    assert [row["step"] for row in history] == [1, 2, 3]
    assert "moments restart from zero" in capsys.readouterr().out


def test_a_checkpoint_of_another_run_is_not_resumed(tmp_path):
    config = DPOConfig(beta=0.5, learning_rate=1e-2, batch_size=4, max_steps=2, save_final_model=False)
    DPOTrainer(tiny_llama(), TinyTokenizer(), make_pairs(seed=0), config, output_dir=tmp_path).train()
    other_data = DPOTrainer(tiny_llama(), TinyTokenizer(), make_pairs(seed=1), config, output_dir=tmp_path)
    with pytest.raises(StaleCheckpointError, match="other data.*resume=False"):
        other_data.train()
    other_beta = DPOTrainer(
        tiny_llama(),
        TinyTokenizer(),
        make_pairs(seed=0),
        DPOConfig(**{**config.__dict__, "beta": 0.1}),
        output_dir=tmp_path,
    )
    with pytest.raises(StaleCheckpointError, match="beta: 0.5 -> 0.1"):
        other_beta.train()
    history = other_data.train(resume=False)  # starting fresh trains all steps, on the new pairs
    assert [row["step"] for row in history] == [1, 2]
    assert (
        DPOTrainer(tiny_llama(), TinyTokenizer(), make_pairs(seed=1), config, output_dir=tmp_path).train() == history
    )


# Settings that cannot train, or mean nothing, are refused by DPOConfig, naming the setting and its value

NOT_TRAINABLE = [
    ({"learning_rate": float("inf")}, "learning_rate=inf must be a finite number"),
    ({"learning_rate": 0}, "learning_rate=0 must be positive"),
    ({"beta": float("inf")}, "beta=inf must be a finite number"),
    ({"simpo_gamma": float("nan"), "objective": "simpo"}, "simpo_gamma=nan must be a finite number"),
    ({"nll_weight": float("nan")}, "nll_weight=nan must be a finite number"),
    ({"nll_weight": -1}, "nll_weight=-1 must be at least 0"),
    ({"max_steps": 0}, "max_steps=0 must be a positive integer"),
    ({"max_steps": -1}, "max_steps=-1 must be a positive integer"),
    ({"warmup_steps": -5}, "warmup_steps=-5 must be an integer >= 0"),
    ({"weight_decay": float("nan")}, "weight_decay=nan must be a finite number"),
    ({"max_grad_norm": float("nan")}, "max_grad_norm=nan must be a finite number or inf"),
]


@pytest.mark.parametrize("settings, message", NOT_TRAINABLE)
def test_settings_that_cannot_train_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        DPOConfig(**settings)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"max_steps": 2.5}, "max_steps=2.5 must be an integer, not float"),
        ({"max_steps": True}, "max_steps=True must be an integer, not bool"),
        ({"seed": 1.0}, "seed=1.0 must be an integer, not float"),
        ({"beta": "0.1"}, "beta='0.1' must be a number, not str"),
        ({"learning_rate": "5e-6"}, "learning_rate='5e-6' must be a number, not str"),
        ({"micro_batch_size": 2.0}, "micro_batch_size=2.0 must be an integer or None, not float"),
        ({"activation_checkpointing": 1}, "activation_checkpointing=1 must be True or False, not int"),
        ({"logprob_mode": 1}, "logprob_mode=1 must be a string, not int"),
    ],
)
def test_settings_of_the_wrong_type_are_refused(settings, message):
    with pytest.raises(TypeError, match=message):
        DPOConfig(**settings)


def test_an_unknown_logprob_mode_is_refused_with_the_choices():
    with pytest.raises(ValueError) as error:
        DPOConfig(logprob_mode="padding-free")
    assert str(error.value) == (
        "logprob_mode='padding-free': choose one of 'auto', 'full', 'lean', 'shared', 'packed', 'packed-unshared'"
    )


def test_shared_prompt_cache_under_activation_checkpointing_is_refused_not_changed():
    """A key/value cache cannot live through checkpointing: 'shared' is refused, in the config and when the
    model's checkpointing was switched on outside it; 'auto' and 'packed' share the prompt in a packed forward."""
    with pytest.raises(ValueError, match="logprob_mode='shared' keeps each prompt's key/value cache"):
        DPOConfig(logprob_mode="shared", activation_checkpointing=True)
    model = tiny_llama()
    (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    with pytest.raises(ValueError, match="use logprob_mode='auto' \\(packed under checkpointing\\)"):
        DPOTrainer(model, TinyTokenizer(), make_pairs(), DPOConfig(logprob_mode="shared"))
    for mode in ("auto", "packed"):
        DPOConfig(logprob_mode=mode, activation_checkpointing=True)


def test_a_changed_copy_is_checked_too():
    from dataclasses import replace

    with pytest.raises(ValueError, match="max_steps=0"):
        replace(DPOConfig(), max_steps=0)


def test_usual_settings_still_validate():
    import numpy as np

    DPOConfig(objective="sft", beta=0.0)  # Preferred-FT ignores beta
    DPOConfig(max_grad_norm=float("inf"), micro_batch_size=2, save_every=3, mixed_precision="no")
    DPOConfig(beta=np.float64(0.1), max_steps=np.int64(3), learning_rate=1)  # numpy numbers and ints are numbers
