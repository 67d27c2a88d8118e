"""One checkpoint API: train up to a step, then on; load a finished run only when it is this run's."""

import pytest
import torch

from dpo_utils.checkpoints import StaleCheckpointError, load_finished_run, state_path
from dpo_utils.trainer import DPOConfig, DPOTrainer
from tests.helpers import TinyTokenizer, make_pairs, tiny_llama

pytestmark = pytest.mark.lowest_versions  # .ci/min-versions runs these

CONFIG = DPOConfig(beta=0.5, learning_rate=1e-2, batch_size=4, max_steps=4, save_final_model=False)


def weights(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_training_in_stages_is_the_straight_run_and_checkpoints_each_stage(tmp_path):
    straight = tiny_llama()
    expected = DPOTrainer(straight, TinyTokenizer(), make_pairs(), CONFIG).train()
    staged = tiny_llama()
    trainer = DPOTrainer(staged, TinyTokenizer(), make_pairs(), CONFIG, output_dir=tmp_path)
    trainer.train(until=1)
    assert trainer.step == 1 and trainer.saved_step == 1 and state_path(tmp_path).exists()
    history = trainer.train(until=3)
    assert trainer.step == 3 and trainer.saved_step == 3 and len(history) == 3
    history = trainer.train()
    assert [row["loss"] for row in history] == pytest.approx([row["loss"] for row in expected], abs=1e-6)
    assert torch.allclose(weights(staged), weights(straight), atol=1e-6)
    with pytest.raises(ValueError, match="until=5 must be a step from 0 to max_steps=4"):
        trainer.train(until=5)


def test_a_finished_run_loads_into_its_starting_model_and_nowhere_else(tmp_path):
    trained = tiny_llama()
    history = DPOTrainer(trained, TinyTokenizer(), make_pairs(), CONFIG, output_dir=tmp_path).train()
    model = tiny_llama()
    assert load_finished_run(model, make_pairs(), CONFIG, tmp_path) == history
    assert torch.equal(weights(model), weights(trained))
    with pytest.raises(StaleCheckpointError, match="another starting model"):
        load_finished_run(tiny_llama(seed=1), make_pairs(), CONFIG, tmp_path)
    with pytest.raises(StaleCheckpointError, match=r"other settings.*beta: 0.5 -> 0.1"):
        load_finished_run(tiny_llama(), make_pairs(), DPOConfig(**{**vars(CONFIG), "beta": 0.1}), tmp_path)
    with pytest.raises(StaleCheckpointError, match="other data"):
        load_finished_run(tiny_llama(), make_pairs(seed=1), CONFIG, tmp_path)


def test_an_unfinished_run_is_not_loaded_as_finished(tmp_path):
    DPOTrainer(tiny_llama(), TinyTokenizer(), make_pairs(), CONFIG, output_dir=tmp_path).train(until=2)
    with pytest.raises(StaleCheckpointError, match="holds step 2 of 4: the run is not finished"):
        load_finished_run(tiny_llama(), make_pairs(), CONFIG, tmp_path)


def test_a_longer_run_is_not_loaded_as_a_shorter_one(tmp_path):
    DPOTrainer(tiny_llama(), TinyTokenizer(), make_pairs(), CONFIG, output_dir=tmp_path).train()
    shorter = DPOConfig(**{**vars(CONFIG), "max_steps": 2})
    with pytest.raises(StaleCheckpointError, match="holds step 4, past this run's max_steps=2"):
        load_finished_run(tiny_llama(), make_pairs(), shorter, tmp_path)


def test_a_finished_run_trained_again_is_loaded_and_not_rewritten(tmp_path):
    config = DPOConfig(**{**vars(CONFIG), "save_final_model": True})
    DPOTrainer(tiny_llama(), TinyTokenizer(), make_pairs(), config, output_dir=tmp_path).train()
    written = state_path(tmp_path).stat().st_mtime_ns, (tmp_path / "final").stat().st_mtime_ns
    again = DPOTrainer(tiny_llama(), TinyTokenizer(), make_pairs(), config, output_dir=tmp_path)
    assert len(again.train()) == 4 and again.step == 4
    assert (state_path(tmp_path).stat().st_mtime_ns, (tmp_path / "final").stat().st_mtime_ns) == written
