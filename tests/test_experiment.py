"""The shared experiment: its budget arithmetic, and runs trained once then loaded, fingerprint-checked."""

import torch

from dpo_utils import experiment
from dpo_utils.experiment import SentimentExperiment, shared_run_dir, train_or_load
from dpo_utils.runtime import config as runtime_config
from tests.helpers import TinyTokenizer, make_pairs, tiny_llama

SMALL = SentimentExperiment(batch_size=4, passes=2.0, traced_points=4, learning_rate=1e-2)


def weights(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_the_budget_is_two_passes_traced_at_four_points():
    full = SentimentExperiment(batch_size=8, passes=2.0, traced_points=4)
    assert full.steps(138) == 35  # 2 x 138 / 8 = 34.5, rounded up
    assert full.traced_steps(138) == [9, 18, 26, 35]
    config = full.dpo_config(138, beta=0.5, seed=2)
    assert (config.max_steps, config.beta, config.seed, config.save_final_model) == (35, 0.5, 2, False)
    assert SentimentExperiment(batch_size=8, passes=0.5, traced_points=4).traced_steps(8) == [1]


def test_a_run_is_trained_once_then_loaded_by_the_next_notebook(tmp_path, monkeypatch):
    for module in (experiment, runtime_config):
        monkeypatch.setattr(module, "RUNS_DIR", tmp_path / "runs")
    pairs, config = make_pairs(), SMALL.dpo_config(8, beta=0.5)
    trained = tiny_llama()
    history, said = train_or_load("DPO beta=0.5", trained, TinyTokenizer(), pairs, config)
    folder = shared_run_dir("DPO beta=0.5", tiny_llama(), pairs, config)
    assert (
        len(history) == 4
        and said == f"DPO beta=0.5: trained here, stored in runs/{folder.relative_to(tmp_path / 'runs')}"
    )

    later = tiny_llama()  # another notebook: the same starting model, pairs and settings
    again, said = train_or_load("DPO beta=0.5", later, TinyTokenizer(), pairs, config)
    assert said.startswith("DPO beta=0.5: loaded from runs/shared/") and "fingerprint matches" in said
    assert again == history and torch.equal(weights(later), weights(trained))


def test_anything_that_changes_the_run_gives_another_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(experiment, "RUNS_DIR", tmp_path / "runs")
    pairs, config = make_pairs(), SMALL.dpo_config(8, beta=0.5)
    base = shared_run_dir("run", tiny_llama(), pairs, config)
    others = [
        shared_run_dir("run", tiny_llama(seed=1), pairs, config),
        shared_run_dir("run", tiny_llama(), make_pairs(seed=1), config),
        shared_run_dir("run", tiny_llama(), pairs, SMALL.dpo_config(8, beta=0.5, seed=1)),
        shared_run_dir("run", tiny_llama(), pairs, SMALL.dpo_config(16, beta=0.5)),  # more steps
    ]
    assert len({base, *others}) == 5
    _, said = train_or_load("run", tiny_llama(), TinyTokenizer(), pairs, SMALL.dpo_config(8, beta=0.5, seed=1))
    assert "trained here" in said


def test_printed_paths_start_at_runs_or_the_repository(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime_config, "RUNS_DIR", tmp_path / "runs")
    assert runtime_config.display_path(tmp_path / "runs" / "07" / "x") == "runs/07/x"
    assert runtime_config.display_path(runtime_config.REPO_ROOT / "data" / "a.jsonl") == "data/a.jsonl"
    assert runtime_config.display_path("/elsewhere/b") == "/elsewhere/b"
