"""The few plots every notebook draws: curves against step, a metrics history, reward against KL,
and the log-ratios of a fixed set of pairs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt


def plot_curves(
    curves: Mapping[str, Sequence[float]],
    title: str = "",
    xlabel: str = "step",
    ylabel: str = "loss",
    logy: bool = False,
    ax=None,
):
    """One line per named curve (e.g. loss per learning rate). Returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    for label, values in curves.items():
        ax.plot(range(len(values)), list(values), label=label)
    if logy:
        ax.set_yscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend()
    return ax


def plot_history(history: Sequence[Mapping[str, float]], keys: Sequence[str], title: str = ""):
    """A row of panels, one per metric key, from a list of per-step metric dicts (with ``step``)."""
    return plot_runs({"run": history}, keys, title)


def plot_reward_vs_kl(results, title: str = "Held-out reward against KL to the reference", groups=None):
    """Scatter of evaluation results ``{name: result of evaluate_policy}``: error bars are the 95%
    intervals over prompts (``reward_low``/``reward_high``, ``kl_low``/``kl_high``), or the standard
    errors ``reward_sem``/``kl_sem`` for results that have no interval.

    ``groups`` maps names to a group, such as one method trained with several seeds: a group's
    points share one colour and one legend entry (a name it leaves out is its own group)."""
    group_of = {name: (groups or {}).get(name, name) for name in results}
    colours = {group: f"C{i % 10}" for i, group in enumerate(dict.fromkeys(group_of.values()))}
    crowded = len(colours) > 5  # a legend inside the axes would hide points
    fig, ax = plt.subplots(figsize=(8.5, 4) if crowded else (6, 4))
    labelled = set()
    for name, res in results.items():
        group = group_of[name]
        label = None if group in labelled else group
        labelled.add(group)
        bars = {"xerr": _error_bar(res, "kl"), "yerr": _error_bar(res, "reward")}
        ax.errorbar(res["kl"], res["reward"], fmt="o", capsize=3, color=colours[group], label=label, **bars)
    ax.set(xlabel="sequence-level KL(pi || pi_ref)  [nats]", ylabel="mean true reward (VADER)", title=title)
    ax.grid(alpha=0.3)
    if crowded:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
        fig.tight_layout()
    else:
        ax.legend()
    return fig


def _error_bar(result, name: str):
    """Asymmetric bars from an interval when the result has one, else the standard error (or none)."""
    if f"{name}_low" in result:
        return [[result[name] - result[f"{name}_low"]], [result[f"{name}_high"] - result[name]]]
    return result.get(f"{name}_sem")


def plot_runs(histories, keys, title: str = ""):
    """Like :func:`plot_history`, one line per named run in every panel."""
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, history in histories.items():
            rows = [row for row in history if key in row]
            if rows:
                ax.plot([row["step"] for row in rows], [row[key] for row in rows], label=name)
        ax.set(title=key, xlabel="step")
        ax.grid(alpha=0.3)
    if len(histories) > 1:
        axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_logratios(rows, title: str = "Log-ratios of one fixed set of pairs"):
    """Mean log-ratio :math:`\\log\\pi/\\pi_{ref}` of chosen and rejected against step, from rows
    ``{"step", "chosen", "rejected"}`` that measure the *same* pairs at every step (as
    :func:`dpo_utils.evaluation.logratios_during_training` returns them). The band is the middle
    half of the pairs (25th to 75th percentile); the black line at 0 is the reference: below it, a
    completion is less likely than under the reference. Returns the figure."""
    import torch

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    steps = [row["step"] for row in rows]
    for key in ("chosen", "rejected"):
        values = [torch.as_tensor(row[key], dtype=torch.float64).flatten() for row in rows]
        (line,) = ax.plot(
            steps, [v.mean().item() for v in values], marker="o", label=f"{key} (mean of {len(values[0])} pairs)"
        )
        ax.fill_between(
            steps,
            [v.quantile(0.25).item() for v in values],
            [v.quantile(0.75).item() for v in values],
            color=line.get_color(),
            alpha=0.2,
        )
    ax.axhline(0.0, color="black", lw=1, label="reference (log-ratio 0)")
    ax.set(xlabel="step", ylabel="log pi/pi_ref  [nats]", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
