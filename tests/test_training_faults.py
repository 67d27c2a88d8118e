"""Faults in training: a NaN in the forward pass, bad settings, a changed dtype, another starting model, a full disk.
Each is refused early with a clear message, or skipped and survived, never trained on silently."""

import errno
import json
import pickle
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dpo_utils import checkpoints
from dpo_utils import trainer as trainer_module
from dpo_utils.checkpoints import StaleCheckpointError
from dpo_utils.losses import dpo_loss
from dpo_utils.runtime.precision import fraction_changed, trainable_copy
from dpo_utils.trainer import DPOConfig, DPOTrainer, NonFiniteTrainingError
from tests.helpers import Planted, TinyTokenizer, make_pairs, plant_checkpoint, tiny_llama


def plant_in_forward(model, value: float):
    """From now on the decoder's last norm outputs ``value`` everywhere (NaN, or inf), as a numerical fault would."""
    return model.model.norm.register_forward_hook(lambda module, inputs, output: torch.full_like(output, value))


# 6. A NaN or inf in the forward pass


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_a_non_finite_forward_pass_is_skipped_and_changes_nothing(value):
    model = tiny_llama()
    trainer = DPOTrainer(
        model, TinyTokenizer(), make_pairs(), DPOConfig(batch_size=8, learning_rate=1e-3, max_steps=4)
    )
    trainer.train_step()  # one good step, so AdamW has state to protect
    handle = plant_in_forward(model, value)
    weights = trainable_copy(model)
    adam = {k: v.clone() for k, v in trainer.optimizer.state_dict()["state"][0].items()}
    row = trainer.train_step()
    assert (
        row["skipped"] == 1 and trainer.skipped_steps == 1 and trainer.skip_reason.startswith("non-finite log-probs")
    )
    assert fraction_changed(weights, model) == 0
    for key, state in trainer.optimizer.state_dict()["state"][0].items():
        assert torch.equal(state, adam[key]), key
    handle.remove()
    assert trainer.train_step()["skipped"] == 0 and fraction_changed(weights, model) > 0.5  # training goes on


def test_repeated_nan_forward_passes_stop_with_the_last_good_checkpoint(tmp_path):
    model = tiny_llama()
    config = DPOConfig(batch_size=8, learning_rate=1e-3, max_steps=10, max_consecutive_skips=3, mixed_precision="no")
    trainer = DPOTrainer(model, TinyTokenizer(), make_pairs(), config, output_dir=tmp_path)
    trainer.train_step()
    good = trainable_copy(model)
    plant_in_forward(model, float("nan"))
    with pytest.raises(NonFiniteTrainingError) as error:
        trainer.train()
    message = str(error.value)
    assert "3 steps in a row were skipped" in message and "non-finite log-probs or loss in the forward pass" in message
    assert (
        "holds the weights from before these skipped steps" in message and "mixed_precision" not in message
    )  # fp32 compute: no other precision to offer
    assert trainer.skipped_steps == 3
    state = torch.load(tmp_path / "checkpoint" / "state.pt", weights_only=True)
    assert state["skipped_steps"] == 3 and all(torch.equal(state["model"][name], good[name]) for name in good)


def test_weights_an_applied_step_made_non_finite_are_not_checkpointed(tmp_path):
    """A step that was applied and broke the weights (a learning rate far too high) is not the last good state."""
    model = tiny_llama()
    config = DPOConfig(batch_size=8, max_steps=10, max_consecutive_skips=2, save_every=1, mixed_precision="no")
    trainer = DPOTrainer(model, TinyTokenizer(), make_pairs(), config, output_dir=tmp_path)
    trainer.train_step()
    trainer.save_checkpoint()
    saved = torch.load(tmp_path / "checkpoint" / "state.pt", weights_only=True)["model"]
    with torch.no_grad():
        model.model.norm.weight[0] = float("inf")  # as a learning rate far too high can leave it
    with pytest.raises(NonFiniteTrainingError) as error:
        trainer.train(resume=False)  # goes on from step 1 with the broken weights (resuming would reload them)
    assert "The weights are no longer finite (model.norm.weight, 1 tensors in all)" in str(error.value)
    assert f"{tmp_path / 'checkpoint'} keeps step 1" in str(error.value)
    state = torch.load(tmp_path / "checkpoint" / "state.pt", weights_only=True)
    assert state["step"] == 1 and all(torch.equal(state["model"][name], saved[name]) for name in saved)


@pytest.mark.parametrize(
    "precision, advice",
    [
        ("fp16", "mixed_precision='bf16' (where the GPU has it) or 'no' instead of 'fp16'"),
        ("bf16", "mixed_precision='no' instead of 'bf16'"),
    ],
)
def test_the_advice_offers_only_other_precisions(precision, advice):
    model = tiny_llama()
    trainer = DPOTrainer(
        model,
        TinyTokenizer(),
        make_pairs(),
        DPOConfig(max_steps=3, max_consecutive_skips=1, mixed_precision=precision),
    )
    trainer.ensure_reference_logps()  # a NaN reference pass stops at once (NumericalFailureError): plant after it
    plant_in_forward(model, float("nan"))
    with pytest.raises(NonFiniteTrainingError, match="1 steps in a row") as error:
        trainer.train()
    assert advice in str(error.value) and f"or '{precision}'" not in str(error.value)


def test_the_loss_functions_still_refuse_non_finite_log_probs_when_called_directly():
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="policy_chosen_logps contains inf .*numerical fault"):
        dpo_loss(torch.tensor([0.0, -float("inf")]), x, x, x)


# 8. The fingerprint includes the starting model


def test_a_checkpoint_of_another_starting_model_is_not_resumed(tmp_path):
    config = DPOConfig(beta=0.5, learning_rate=1e-2, batch_size=4, max_steps=2, save_final_model=False)
    DPOTrainer(tiny_llama(seed=0), TinyTokenizer(), make_pairs(), config, output_dir=tmp_path).train()
    other = tiny_llama(seed=1)
    before = trainable_copy(other)
    with pytest.raises(StaleCheckpointError, match="another starting model.*resume=False"):
        DPOTrainer(other, TinyTokenizer(), make_pairs(), config, output_dir=tmp_path).train()
    assert fraction_changed(before, other) == 0  # not silently replaced by the old run's weights
    same = DPOTrainer(
        tiny_llama(seed=0),
        TinyTokenizer(),
        make_pairs(),
        DPOConfig(**{**config.__dict__, "max_steps": 3}),
        output_dir=tmp_path,
    )
    assert [row["step"] for row in same.train()] == [1, 2, 3]  # the same start still resumes


def test_the_fingerprint_is_of_the_model_as_passed_in():
    model = tiny_llama()
    start = checkpoints.model_fingerprint(model)
    trainer = DPOTrainer(model, TinyTokenizer(), make_pairs(), DPOConfig(learning_rate=1e-2, max_steps=1))
    trainer.train_step()
    assert (
        trainer.model_digest == start != checkpoints.model_fingerprint(model)
        and checkpoints.model_fingerprint(tiny_llama()) == start
    )
    assert checkpoints.model_fingerprint(tiny_llama(seed=1)) != start


def test_a_starting_model_differing_in_one_element_is_not_resumed(tmp_path):
    config = DPOConfig(beta=0.5, learning_rate=1e-2, batch_size=4, max_steps=2, save_final_model=False)
    DPOTrainer(tiny_llama(), TinyTokenizer(), make_pairs(), config, output_dir=tmp_path).train()
    other = tiny_llama()
    with torch.no_grad():  # element 1 of 2048: a sampler of 64 evenly strided elements (stride 32) skips it
        other.model.embed_tokens.weight[0, 1] += 1e-3
    with pytest.raises(StaleCheckpointError, match="another starting model"):
        DPOTrainer(other, TinyTokenizer(), make_pairs(), config, output_dir=tmp_path).train()


def test_the_fingerprint_reads_half_precision_weights():
    model = tiny_llama()
    assert checkpoints.model_fingerprint(model.to(torch.bfloat16)) != checkpoints.model_fingerprint(tiny_llama())


# 9. Settings checked at once


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"beta": 0.0}, "beta=0.0 must be positive"),
        ({"beta": -0.1, "objective": "simpo"}, "beta=-0.1 must be positive"),
        ({"loss_type": "sigmod"}, "loss_type='sigmod': choose one of"),
        ({"label_smoothing": 0.5}, r"label_smoothing=0.5 must be in \[0, 0.5\)"),
        ({"label_smoothing": -0.1}, r"label_smoothing=-0.1 must be in \[0, 0.5\)"),
        ({"label_smoothing": 0.1, "loss_type": "ipo"}, "label_smoothing is not defined for loss_type='ipo'"),
        ({"batch_size": 0}, "batch_size=0 must be a positive integer"),
        (
            {"batch_size": 8, "micro_batch_size": 3},
            r"micro_batch_size=3 must divide batch_size=8 \(one of \[1, 2, 4, 8\]\)",
        ),
        ({"micro_batch_size": 0}, "micro_batch_size=0 must divide"),
        ({"max_grad_norm": 0.0}, "max_grad_norm=0.0 must be positive.*trains nothing.*float\\('inf'\\)"),
        ({"max_consecutive_skips": 0}, "max_consecutive_skips=0 must be a positive integer"),
        ({"save_every": 0}, "save_every=0 must be a positive number of steps"),
    ],
)
def test_bad_settings_are_refused_by_the_config(settings, message):
    with pytest.raises(ValueError, match=message):
        DPOConfig(**settings)


def test_no_clipping_is_spelled_inf_and_trains():
    model = tiny_llama()
    before = trainable_copy(model)
    DPOTrainer(
        model, TinyTokenizer(), make_pairs(), DPOConfig(max_grad_norm=float("inf"), learning_rate=1e-3, max_steps=1)
    ).train()
    assert fraction_changed(before, model) > 0.5


class NoPadTokenizer(TinyTokenizer):
    pad_token_id = None


@pytest.mark.parametrize(
    "case, message",
    [
        ("output_dir is a file", "output_dir is a file, not a folder"),
        ("output_dir under a file", "output_dir's parent .* is a file"),
        ("empty pairs", "pairs is empty: nothing to train on"),
        ("batch larger than the data", "batch_size=8 is larger than the 5 pairs: every step would repeat pairs"),
        ("no pad token", "the tokenizer has no pad token.*ensure_pad_token"),
        ("empty completion", r"pairs \[1\] have an empty completion"),
    ],
)
def test_bad_trainer_inputs_are_refused_at_construction(tmp_path, case, message):
    (tmp_path / "a_file").write_text("")
    pairs, tokenizer, output_dir = make_pairs(), TinyTokenizer(), tmp_path / "run"
    if case == "output_dir is a file":
        output_dir = tmp_path / "a_file"
    elif case == "output_dir under a file":
        output_dir = tmp_path / "a_file" / "run"
    elif case == "empty pairs":
        pairs = []
    elif case == "batch larger than the data":
        pairs = make_pairs(n=5)
    elif case == "no pad token":
        tokenizer = NoPadTokenizer()
    else:
        pairs[1].rejected_ids = []
    with pytest.raises(ValueError, match=message):
        DPOTrainer(tiny_llama(), tokenizer, pairs, DPOConfig(batch_size=8), output_dir=output_dir)


def test_weights_cast_to_bf16_after_construction_are_refused_at_the_next_step():
    model = tiny_llama()
    trainer = DPOTrainer(model, TinyTokenizer(), make_pairs(), DPOConfig(learning_rate=5e-7, max_steps=2))
    trainer.train_step()
    model.to(torch.bfloat16)
    with pytest.raises(ValueError, match="not float32 since DPOTrainer was built"):
        trainer.train_step()


# 10. A full disk while saving


def fill_the_disk(monkeypatch, error: Exception):
    """torch.save writes part of the file, then fails as it does when the disk is full."""

    def save(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"PK\x03\x04 partial")
        raise error

    monkeypatch.setattr(torch, "save", save)


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4416 vs 4304"),
        OSError(errno.ENOSPC, "No space left on device"),
    ],
    ids=["zip-writer", "ENOSPC"],
)
def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so(tmp_path, monkeypatch, error):
    config = DPOConfig(beta=0.5, learning_rate=1e-2, batch_size=4, max_steps=1, save_final_model=False)
    trainer = DPOTrainer(tiny_llama(), TinyTokenizer(), make_pairs(), config, output_dir=tmp_path)
    trainer.train()
    folder = tmp_path / "checkpoint"
    history = (folder / "history.json").read_text()
    trainer.train_step()
    fill_the_disk(monkeypatch, error)
    with pytest.raises(
        RuntimeError,
        match=f"no space left on the device while saving the checkpoint of step 2 to {folder}; "
        "the partial file was removed and the previous checkpoint .* is intact",
    ) as caught:
        trainer.save_checkpoint()
    assert isinstance(caught.value, checkpoints.CheckpointSaveError)
    monkeypatch.undo()
    assert sorted(p.name for p in folder.iterdir()) == ["history.json", "state.pt"]
    assert (
        torch.load(folder / "state.pt", weights_only=True)["step"] == 1
        and (folder / "history.json").read_text() == history
    )


def test_history_json_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    config = DPOConfig(beta=0.5, learning_rate=1e-2, batch_size=4, max_steps=1, save_final_model=False)
    trainer = DPOTrainer(tiny_llama(), TinyTokenizer(), make_pairs(), config, output_dir=tmp_path)
    trainer.train()
    folder = tmp_path / "checkpoint"
    history = (folder / "history.json").read_text()
    write_text = Path.write_text

    def half_written(self, text, *args, **kwargs):  # the disk fills up halfway through history.json
        if self.name.startswith("history.json"):
            write_text(self, text[: len(text) // 2], *args, **kwargs)
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_text(self, text, *args, **kwargs)

    trainer.train_step()
    monkeypatch.setattr(Path, "write_text", half_written)
    with pytest.raises((RuntimeError, OSError), match="no space left"):
        trainer.save_checkpoint()
    monkeypatch.undo()
    assert (folder / "history.json").read_text() == history and json.loads(history)[0]["step"] == 1
    assert sorted(p.name for p in folder.iterdir()) == ["history.json", "state.pt"]
    assert torch.load(folder / "state.pt", weights_only=True)["step"] == 1  # state and history stay of one step


def fill_the_disk_in_save_pretrained(monkeypatch, model):
    """save_pretrained writes a config and part of the weights, then the disk is full."""

    def save_pretrained(folder, *args, **kwargs):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "config.json").write_text("{}")
        (Path(folder) / "model.safetensors").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(model, "save_pretrained", save_pretrained)


def test_a_full_disk_while_saving_the_final_model_leaves_no_half_written_final(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    config = DPOConfig(beta=0.5, learning_rate=1e-2, batch_size=4, max_steps=1)
    model = tiny_llama()
    fill_the_disk_in_save_pretrained(monkeypatch, model)
    final, checkpoint = tmp_path / "final", tmp_path / "checkpoint"
    with pytest.raises(
        checkpoints.CheckpointSaveError,
        match=f"no space left on the device while saving the final model to {final}; the partial folder was "
        f"removed and no final/ was written. The checkpoint {checkpoint} \\(step 1\\) is intact: free some space "
        "and run again to resume from it",
    ):
        DPOTrainer(model, TinyTokenizer(), make_pairs(), config, output_dir=tmp_path).train()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]  # no final/, no final.tmp
    monkeypatch.undo()
    DPOTrainer(tiny_llama(), TinyTokenizer(), make_pairs(), config, output_dir=tmp_path).train()  # writes final/
    first = AutoModelForCausalLM.from_pretrained(final).state_dict()

    longer = DPOTrainer(model := tiny_llama(), TinyTokenizer(), make_pairs(), replace(config, max_steps=2), tmp_path)
    fill_the_disk_in_save_pretrained(monkeypatch, model)
    with pytest.raises(checkpoints.CheckpointSaveError, match="the previous final model there is as it was"):
        longer.train()
    kept = AutoModelForCausalLM.from_pretrained(final).state_dict()  # the older final/, whole
    assert all(torch.equal(kept[name], first[name]) for name in first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "final"]


# 11. A checkpoint never runs code


def test_a_planted_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    plant_checkpoint(tmp_path / "run" / "checkpoint", marker)
    trainer = DPOTrainer(
        tiny_llama(), TinyTokenizer(), make_pairs(), DPOConfig(max_steps=1), output_dir=tmp_path / "run"
    )
    path = tmp_path / "run" / "checkpoint" / "state.pt"
    with pytest.raises(
        checkpoints.UnsafeCheckpointError, match=f"{path} is not a checkpoint this trainer can load safely"
    ) as error:
        trainer.train()
    assert not marker.exists() and "Nothing in it was run" in str(error.value)
    pickle.loads(pickle.dumps(Planted(marker)))  # the payload is real: unpickled by pickle, it runs
    assert marker.exists()


def test_checkpoints_hold_only_what_weights_only_loading_allows(tmp_path):
    config = DPOConfig(beta=0.5, learning_rate=1e-2, batch_size=4, max_steps=2, save_every=1, save_final_model=False)
    trainer = DPOTrainer(tiny_llama(), TinyTokenizer(), make_pairs(), config, output_dir=tmp_path)
    trainer.train_step()
    trainer.save_checkpoint()  # mid-run: with optimizer state
    state = torch.load(tmp_path / "checkpoint" / "state.pt", weights_only=True)
    assert state["step"] == 1 and state["optimizer"]["state"] and state["reference_logps"]["batching"]


# 12. Ctrl-C


def interrupt_at(monkeypatch, step: int):
    """Ctrl-C as step ``step + 1`` starts."""
    real = DPOTrainer.train_step

    def train_step(self):
        if self.step == step:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(DPOTrainer, "train_step", train_step)


def test_ctrl_c_says_where_a_new_run_resumes_and_it_resumes_there(tmp_path, monkeypatch, capsys):
    config = DPOConfig(beta=0.5, learning_rate=1e-2, batch_size=4, max_steps=4, save_every=2, save_final_model=False)
    straight = tiny_llama()
    expected = DPOTrainer(straight, TinyTokenizer(), make_pairs(), config, output_dir=tmp_path / "a").train()
    model = tiny_llama()
    trainer = DPOTrainer(model, TinyTokenizer(), make_pairs(), config, output_dir=tmp_path / "b")
    interrupt_at(monkeypatch, 3)
    message = (
        f"stopped at step 3 of 4; run again to resume from the checkpoint of step 2 in {tmp_path / 'b' / 'checkpoint'}"
    )
    with pytest.raises(trainer_module.TrainingInterrupted) as error:
        trainer.train()
    assert isinstance(error.value, KeyboardInterrupt) and str(error.value) == message
    assert message in capsys.readouterr().out
    monkeypatch.undo()
    assert trainer.train() == expected  # the same trainer, called again
    assert all(torch.equal(p, q) for p, q in zip(straight.parameters(), model.parameters()))


def test_ctrl_c_before_any_checkpoint_says_so(tmp_path, monkeypatch):
    config = DPOConfig(beta=0.5, learning_rate=1e-2, batch_size=4, max_steps=4, save_final_model=False)
    trainer = DPOTrainer(tiny_llama(), TinyTokenizer(), make_pairs(), config, output_dir=tmp_path)
    interrupt_at(monkeypatch, 1)
    with pytest.raises(
        KeyboardInterrupt, match="stopped at step 1 of 4; no checkpoint was written yet to .*checkpoint,"
    ):
        trainer.train()


def test_a_save_interrupted_between_its_renames_is_repaired_on_resume(tmp_path, monkeypatch):
    config = DPOConfig(beta=0.5, learning_rate=1e-2, batch_size=4, max_steps=3, save_every=1, save_final_model=False)
    expected = DPOTrainer(tiny_llama(), TinyTokenizer(), make_pairs(), config, output_dir=tmp_path / "a").train()
    folder = tmp_path / "b" / "checkpoint"
    trainer = DPOTrainer(tiny_llama(), TinyTokenizer(), make_pairs(), config, output_dir=tmp_path / "b")
    rename = Path.replace

    def replace_then_stop(self, target):  # Ctrl-C after state.pt of step 2 is in place, before history.json
        if self.name == "history.json.tmp" and trainer.step == 2:
            raise KeyboardInterrupt
        return rename(self, target)

    monkeypatch.setattr(Path, "replace", replace_then_stop)
    with pytest.raises(KeyboardInterrupt, match="resume from the checkpoint of step 2"):
        trainer.train()
    monkeypatch.undo()
    assert sorted(p.name for p in folder.iterdir()) == ["history.json", "history.json.tmp", "state.pt"]
    assert len(json.loads((folder / "history.json").read_text())) == 1  # one step behind state.pt
    resumed = DPOTrainer(tiny_llama(), TinyTokenizer(), make_pairs(), config, output_dir=tmp_path / "b")
    resumed.load_checkpoint()  # trusts state.pt: history.json rewritten from it, the stray .tmp removed
    assert sorted(p.name for p in folder.iterdir()) == ["history.json", "state.pt"]
    assert json.loads((folder / "history.json").read_text()) == expected[:2] == resumed.history
    assert resumed.train() == expected
