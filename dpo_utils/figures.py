"""Figures that explain a mechanism (not a result): drawn with matplotlib, so they are tested and
restyled in one place. Each function draws one figure and returns it.
"""

from __future__ import annotations

import matplotlib.pyplot as plt

# --- 00 ---

LADDER = [  # (stage, [(notebook, short title), ...]): the climb the notebooks make
    ("foundations", [("01", "gradient descent\non an MSE toy"), ("02", "gradients by hand,\nchecked by autograd")]),
    ("the DPO loss", [("03", "Bradley-Terry\npreferences"), ("04", "RLHF objective\nto the DPO loss")]),
    ("DPO checked", [("05", "tabular DPO with\na known optimum"), ("06", "sequence log-probs\nof a real LM")]),
    ("a real model", [("07", "DPO on SmolLM2\non a CPU"), ("08", "DPO on a GPU,\nyour own data")]),
    (
        "beyond",
        [("09", "variants"), ("10", "diagnostics"), ("11", "on-policy,\niterative"), ("12", "best-of-N,\nonline RL")],
    ),
]


def draw_ladder():
    """The map of the notebooks: five stages climbed bottom to top, each rung one notebook."""
    figure, ax = plt.subplots(figsize=(9, 5.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for level, (stage, rungs) in enumerate(LADDER):
        ax.text(-0.1, level, stage, ha="right", va="center", fontsize=10, fontweight="bold")
        width = 4 / len(rungs)
        for i, (number, title) in enumerate(rungs):
            x = i * width + width / 2
            box = dict(boxstyle="round,pad=0.35", facecolor=colours[level % len(colours)], alpha=0.25)
            ax.text(x, level, f"{number}  {title}", ha="center", va="center", fontsize=8.5, bbox=box)
        if level:
            ax.annotate("", xy=(2, level - 0.32), xytext=(2, level - 0.68), arrowprops=dict(arrowstyle="->"))
    ax.set_xlim(-1.6, 4.1)
    ax.set_ylim(-0.6, len(LADDER) - 0.4)
    ax.axis("off")
    ax.set_title("The ladder: each stage uses what the one below built (00 is this page)")
    figure.tight_layout()
    return figure


# --- 03 ---


# --- 04 ---


# --- 05 ---


# --- 06 ---


# --- end ---
