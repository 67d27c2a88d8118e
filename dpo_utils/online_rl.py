"""Online RL baseline: GRPO with TRL's ``GRPOTrainer``, checkpoints to trace the policy through training.

GRPO samples ``num_generations`` completions per prompt from the current policy and scores them with
a reward function. A completion's advantage is its reward minus the mean reward of its group (divided
by the group's standard deviation when ``scale_rewards="group"``, TRL's default); the policy-gradient
loss adds a KL penalty to the frozen reference, the starting model, at coefficient ``beta``. It is
on-policy RL: the role PPO plays in the DPO paper, without PPO's value network.

Here each optimizer step samples once and uses the samples once (``num_iterations=1``), so PPO's ratio
clipping never acts. Sampling is at temperature 1 with no top-k / top-p, as in
:func:`~dpo_utils.sampling.sample_completions`. TRL's logged ``kl`` is a per-token mean (the k3
estimator), not the sequence-level KL of :func:`~dpo_utils.evaluation.evaluate_policy`: for a
reward-KL plot, evaluate the checkpoints (:func:`saved_checkpoints`, :func:`load_checkpoint_weights`).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

from dpo_utils.runtime.models import quiet_checkpointing_renames

CHECKPOINT = re.compile(r"checkpoint-(\d+)")


def completion_text(completion) -> str:
    """The text of one completion as TRL passes it: a string, or a list of messages (conversational)."""
    return completion if isinstance(completion, str) else completion[-1]["content"]


def text_reward(reward_fn):
    """``reward_fn(texts) -> list[float]`` as a TRL reward function (which receives prompts, completions...)."""

    def reward(completions, **kwargs):
        return reward_fn([completion_text(c) for c in completions])

    reward.__name__ = getattr(reward_fn, "__name__", "reward")  # TRL logs it as ``rewards/<name>/mean``
    return reward


def grpo_config(
    output_dir,
    *,
    beta: float,
    num_generations: int,
    max_completion_length: int,
    steps: int,
    learning_rate: float,
    prompts_per_step: int,
    micro_batch_size: int,
    save_every: int,
    scale_rewards: str,
    loss_type: str,
    seed: int,
    use_cpu: bool,
    dtype: str = "float32",
):
    """TRL's ``GRPOConfig``: ``prompts_per_step * num_generations`` completions sampled once per optimizer step,
    in micro-batches of ``micro_batch_size`` completions (gradient accumulation); no mixed precision; checkpoints
    of the weights only."""
    from trl import GRPOConfig

    completions = prompts_per_step * num_generations
    if completions % micro_batch_size:
        raise ValueError(f"micro_batch_size={micro_batch_size} must divide {completions} completions per step")
    accumulation = completions // micro_batch_size  # = steps_per_generation: one sampling per optimizer step
    with quiet_checkpointing_renames():  # the old name, which every transformers version from 4.56 reads
        return GRPOConfig(
            output_dir=str(output_dir),
            beta=beta,
            num_generations=num_generations,
            max_completion_length=max_completion_length,
            scale_rewards=scale_rewards,
            loss_type=loss_type,
            num_iterations=1,
            per_device_train_batch_size=micro_batch_size,
            gradient_accumulation_steps=accumulation,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_steps=steps,
            learning_rate=learning_rate,
            lr_scheduler_type="constant",
            gradient_checkpointing=False,  # TRL's default (True) would cost time; micro-batches bound the memory
            bf16=False,
            use_cpu=use_cpu,
            model_init_kwargs={"dtype": dtype},
            disable_dropout=True,
            save_strategy="steps",
            save_steps=save_every,
            save_only_model=True,
            logging_steps=1,
            report_to="none",
            disable_tqdm=True,
            seed=seed,
        )


# The settings that decide what GRPO optimises and how far it moves, for settings_against_trl
COMPARED_SETTINGS = (
    "beta",
    "num_generations",
    "learning_rate",
    "lr_scheduler_type",
    "loss_type",
    "scale_rewards",
    "max_completion_length",
    "temperature",
    "num_iterations",
    "epsilon",
    "mask_truncated_completions",
    "gradient_checkpointing",
    "disable_dropout",
)


def settings_against_trl(config) -> list[tuple[str, object, object]]:
    """``(setting, this run's value, TRL's default)`` for each of ``COMPARED_SETTINGS`` where a
    ``GRPOConfig`` (from :func:`grpo_config`) departs from the defaults of the installed TRL."""
    defaults = {field.name: field.default for field in dataclasses.fields(type(config))}
    plain = lambda value: getattr(value, "value", value)  # an enum (the scheduler type) as its string
    rows = [(name, plain(getattr(config, name)), plain(defaults[name])) for name in COMPARED_SETTINGS]
    return [row for row in rows if row[1] != row[2]]


def describe_settings_against_trl(config) -> str:
    """The departures of :func:`settings_against_trl` as a table, one line each."""
    import trl

    rows = settings_against_trl(config)
    width = max(len(name) for name, _, _ in rows) if rows else 8
    lines = [f"{'setting':{width}s} {'this run':>12s} {'TRL ' + trl.__version__ + ' default':>20s}"]
    lines += [f"{name:{width}s} {ours!s:>12s} {default!s:>20s}" for name, ours, default in rows]
    return "\n".join(lines)


def train_grpo(
    model,
    tokenizer,
    prompts,
    reward_fn,
    output_dir,
    *,
    beta: float = 0.04,
    num_generations: int = 4,
    max_completion_length: int = 128,
    steps: int = 20,
    learning_rate: float = 1e-5,
    prompts_per_step: int = 8,
    micro_batch_size: int | None = None,
    save_every: int = 5,
    scale_rewards: str = "group",
    loss_type: str = "dapo",
    seed: int = 0,
    overwrite: bool = False,
    callbacks=None,
) -> list[dict]:
    """Train a copy of ``model`` with GRPO for ``steps`` optimizer steps; return TRL's log row of each step.

    ``reward_fn(texts) -> list[float]`` scores completion texts (e.g. :func:`~dpo_utils.rewards.vader_reward`).
    ``model`` itself is not changed: its weights are saved as ``output_dir/checkpoint-0``, the reference, and
    TRL trains a model loaded from there. The trained weights are saved every ``save_every`` steps and at the
    last step, as ``checkpoint-<step>`` folders (:func:`saved_checkpoints`). ``micro_batch_size`` (completions
    per forward/backward pass) defaults to ``num_generations``. ``overwrite=True`` removes an earlier run's
    checkpoints from ``output_dir``; otherwise they raise ``FileExistsError``.

    Rows hold TRL's metric names: ``reward``, ``reward_std``, ``rewards/<reward_fn name>/mean``, ``kl`` (absent
    when ``beta=0``), ``loss``, ``entropy``, ``completions/mean_length``, ``completions/clipped_ratio``, ``step``...
    """
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import GRPOTrainer

    if len(prompts) < prompts_per_step:
        raise ValueError(f"{len(prompts)} prompts, fewer than prompts_per_step={prompts_per_step}")
    output_dir = Path(output_dir)
    args = grpo_config(
        output_dir,
        beta=beta,
        num_generations=num_generations,
        max_completion_length=max_completion_length,
        steps=steps,
        learning_rate=learning_rate,
        prompts_per_step=prompts_per_step,
        micro_batch_size=micro_batch_size or num_generations,
        save_every=save_every,
        scale_rewards=scale_rewards,
        loss_type=loss_type,
        seed=seed,
        use_cpu=model.device.type == "cpu",
        dtype=str(model.dtype).removeprefix("torch."),
    )
    remove_old_checkpoints(output_dir, overwrite)
    start = output_dir / "checkpoint-0"
    with no_transformers_bars():
        model.save_pretrained(start)
    tokenizer.save_pretrained(start)
    with quiet_checkpointing_renames(), no_transformers_bars():  # TRL uses the old names
        trainer = GRPOTrainer(
            model=str(start),  # policy and frozen reference both loaded from the start weights
            reward_funcs=text_reward(reward_fn),
            args=args,
            train_dataset=Dataset.from_dict({"prompt": list(prompts)}),
            processing_class=tokenizer,
            callbacks=callbacks,
        )
        trainer.remove_callback(PrinterCallback)  # it prints every log row to stdout
        trainer.train()
    return [row for row in trainer.state.log_history if "reward" in row]


@contextmanager
def no_transformers_bars():
    """Hide transformers' "Loading weights" / "Writing model shards" bars inside the block (a notebook stores them)."""
    from transformers.utils import logging

    shown = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            logging.enable_progress_bar()


def saved_checkpoints(output_dir) -> list[tuple[int, Path]]:
    """``(step, folder)`` of each checkpoint in ``output_dir``, by step; step 0 holds the starting weights."""
    found = [(CHECKPOINT.fullmatch(path.name), path) for path in Path(output_dir).glob("checkpoint-*")]
    return sorted((int(match.group(1)), path) for match, path in found if match and path.is_dir())


def remove_old_checkpoints(output_dir, overwrite: bool) -> None:
    """Remove an earlier run's checkpoints when ``overwrite``, else refuse to mix them with a new run's."""
    old = saved_checkpoints(output_dir)
    if old and not overwrite:
        names = ", ".join(path.name for _, path in old)
        raise FileExistsError(f"{output_dir} already holds {names}; pass overwrite=True to replace them")
    for _, path in old:
        shutil.rmtree(path)


def load_checkpoint_weights(model, checkpoint_dir):
    """Load the weights saved in ``checkpoint_dir`` into ``model`` (same architecture) in place; return it.

    Every saved tensor must match a parameter; only weights tied to a loaded one (a tied LM head) may be absent.
    """
    from safetensors.torch import load_file

    files = sorted(Path(checkpoint_dir).glob("model*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no model*.safetensors in {checkpoint_dir}")
    state = {name: tensor for file in files for name, tensor in load_file(file).items()}
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {id(params[name]) for name in state if name in params}
    expected = model.state_dict().keys()
    absent = [name for name in expected if name not in state and id(params.get(name)) not in loaded]
    unexpected = [name for name in state if name not in expected]
    if absent or unexpected:
        raise ValueError(f"{checkpoint_dir} does not fit the model: absent {absent[:3]}, unexpected {unexpected[:3]}")
    model.load_state_dict(state, strict=False)
    return model
