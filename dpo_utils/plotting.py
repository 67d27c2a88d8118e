"""The few plots every notebook draws: curves against step, and a metrics history."""

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


def plot_history(
    history: Sequence[Mapping[str, float]],
    keys: Sequence[str],
    title: str = "",
    x_key: str = "step",
):
    """A row of panels, one per metric key, from a list of per-step metric dicts."""
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        rows = [row for row in history if key in row]
        xs = [row.get(x_key, i) for i, row in enumerate(rows)]
        ax.plot(xs, [row[key] for row in rows])
        ax.set(title=key, xlabel=x_key)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
