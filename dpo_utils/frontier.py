"""Methods on one reward-KL plot, each traced through training so that each is a curve.

:func:`trace_training` trains a :class:`~dpo_utils.trainer.DPOTrainer` and evaluates its policy at
chosen steps; :func:`plot_frontier` draws every method's curve, with 95% intervals over prompts,
and best-of-N's closed-form KL as a dashed reference.
"""

from __future__ import annotations

import json

import matplotlib.pyplot as plt


def trace_training(trainer, at_steps, evaluate) -> dict[int, dict]:
    """Train ``trainer`` to ``max(at_steps)``; ``evaluate(policy)`` at each step of ``at_steps``.

    Training is :meth:`~dpo_utils.trainer.DPOTrainer.train` up to each traced step in turn. With an
    output folder the trainer checkpoints at every traced step and each evaluation is written to
    ``trace.json`` beside it, so a re-run resumes from the last checkpoint (refused when it belongs
    to another run) and re-uses the evaluations it has. Returns ``{step: result}``.
    """
    folder = trainer.output_dir
    cache_file = folder / "trace.json" if folder else None
    traced = (
        {int(k): v for k, v in json.loads(cache_file.read_text()).items()}
        if cache_file and cache_file.exists()
        else {}
    )
    for step in sorted(at_steps):
        trainer.train(until=step)  # resumes from the checkpoint, and checkpoints the state at `step`
        if step not in traced:
            traced[step] = evaluate(trainer.model.eval())
            if cache_file:
                cache_file.write_text(json.dumps(traced))
    return {step: traced[step] for step in sorted(at_steps)}


def plot_frontier(curves: dict, title: str = "Held-out reward against KL to the reference", bound=None):
    """One line per method: ``curves[name]`` is a list of results (``reward``, ``kl`` and their
    ``_low``/``_high`` intervals), in training order, the reference first if it belongs to the curve.
    ``bound`` (optional): ``(kls, rewards)`` drawn as best-of-N at its closed-form KL."""
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    for name, points in curves.items():
        kl, reward = [p["kl"] for p in points], [p["reward"] for p in points]
        line = ax.plot(kl, reward, "o-", ms=4, label=name)[0]
        for p in points:
            ax.plot([p["kl_low"], p["kl_high"]], [p["reward"]] * 2, color=line.get_color(), lw=0.8, alpha=0.6)
            ax.plot([p["kl"]] * 2, [p["reward_low"], p["reward_high"]], color=line.get_color(), lw=0.8, alpha=0.6)
    if bound is not None:
        ax.plot(*bound, "k--", lw=1, label="best-of-N at log N - (N-1)/N")
    ax.set(xlabel="sequence-level KL(pi || pi_ref)  [nats]", ylabel="mean held-out reward (VADER)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()
    return fig
