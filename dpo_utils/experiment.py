"""The one sentiment experiment that notebooks 07, 09, 11 and 12 look at from several sides, and its
runs, each trained once and then shared.

The definition (:data:`EXPERIMENT`): SmolLM2-135M-Instruct, movie-review prompts, VADER as the reward,
the held-out evaluation (48 prompts, 4 samples each), the training budget (two passes over the pairs,
evaluated at 4 points) and the seeds. A notebook that changes one thing (an objective, a data
source) does so with ``dataclasses.replace`` and says so.

The run store (:func:`train_or_load`): a run lives in ``runs/shared/<size>/<name>-<fingerprint>``, where
the fingerprint hashes everything that decides its trajectory (starting weights, pairs, settings,
seed; :func:`dpo_utils.checkpoints.run_fingerprint`). The first notebook that needs a run trains it;
every later one loads it, fingerprint-checked, and says so. Changing anything gives another folder,
never a wrong run. A finished run keeps its weights and history (540 MB for SmolLM2 in fp32), not
Adam's moments.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from dpo_utils.checkpoints import StaleCheckpointError, load_finished_run, model_fingerprint, run_fingerprint
from dpo_utils.runtime.config import RUNS_DIR, display_path, pick, run_size
from dpo_utils.runtime.models import DEFAULT_MODEL
from dpo_utils.trainer import DPOConfig, DPOTrainer


@dataclass(frozen=True)
class SentimentExperiment:
    """Everything the language-model notebooks share; sizes shrink with ``DPO_TUTORIAL_SIZE=reduced``."""

    model: str = DEFAULT_MODEL
    prompts_file: str = "movie_review_prompts.jsonl"  # in data/: train and test prompts
    pairs_file: str = "sentiment_pairs.jsonl"  # in data/: the shipped pairs
    eval_prompts: int = pick(48, 2)  # held-out prompts: the unit of evidence
    eval_samples: int = pick(4, 1)  # samples per held-out prompt
    eval_tokens: int = pick(128, 24)  # cap of an evaluation sample; the share cut is reported
    pair_tokens: int = 128  # cap of the samples that make pairs; cut samples are left out
    sampling_seed: int = 1  # every model is evaluated on the same sampling seed
    sampling_batch: int = 192  # completions sampled at once: 1.15-1.28x four batches of 48 (docs/speed.md)
    batch_size: int = pick(8, 2)
    passes: float = pick(2.0, 0.5)  # passes over the pairs: DPO's held-out reward and KL flatten by then
    traced_points: int = pick(4, 1)  # evaluations along each run, the last at its end
    learning_rate: float = 1e-5
    betas: tuple[float, ...] = pick((0.05, 0.1, 0.5), (0.1,))
    seeds: tuple[int, ...] = pick((0, 1, 2), (0, 1))

    def steps(self, n_pairs: int) -> int:
        """Optimizer steps for ``passes`` over ``n_pairs`` pairs."""
        return max(1, math.ceil(self.passes * n_pairs / self.batch_size))

    def traced_steps(self, n_pairs: int) -> list[int]:
        """``traced_points`` evenly spaced steps, the last one the run's end."""
        steps = self.steps(n_pairs)
        return sorted({max(1, round(steps * (i + 1) / self.traced_points)) for i in range(self.traced_points)})

    def dpo_config(self, n_pairs: int, **changes) -> DPOConfig:
        """The experiment's training settings for ``n_pairs`` pairs; ``changes`` (``beta``, ``seed``,
        ``objective``...) are the one thing a run changes on purpose."""
        settings = dict(learning_rate=self.learning_rate, batch_size=self.batch_size, max_steps=self.steps(n_pairs))
        return DPOConfig(**(settings | {"save_final_model": False} | changes))  # the store keeps the weights


EXPERIMENT = SentimentExperiment()


def shared_run_dir(name: str, model, pairs, config: DPOConfig) -> Path:
    """Where the run ``name`` of ``model`` on ``pairs`` with ``config`` is stored, whichever notebook trains it."""
    fingerprint = run_fingerprint(config, pairs, model_fingerprint(model))
    slug = re.sub(r"[^A-Za-z0-9.]+", "_", name).strip("_")
    return RUNS_DIR / "shared" / run_size() / f"{slug}-{fingerprint}-{config.max_steps}steps"


def train_or_load(name: str, model, tokenizer, pairs, config: DPOConfig, reference_logps=None):
    """Train run ``name`` into the shared store, or load it there if an earlier notebook finished it.

    ``model`` is the run's starting model; it ends with the run's trained weights. Returns the run's
    history (one row per step) and one line saying where the run came from."""
    folder = shared_run_dir(name, model, pairs, config)
    try:
        history = load_finished_run(model, pairs, config, folder)
        return history, f"{name}: loaded from {display_path(folder)} (trained earlier; its fingerprint matches)"
    except (FileNotFoundError, StaleCheckpointError):  # never trained, or stopped part way: train (or resume) it
        pass
    trainer = DPOTrainer(model, tokenizer, pairs, config, folder, reference_logps)
    return trainer.train(), f"{name}: trained here, stored in {display_path(folder)}"
