"""Figures that explain a mechanism (not a result): drawn with matplotlib, so they are tested and
restyled in one place. Each function draws one figure and returns it.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

# --- 00 ---


# --- 03 ---


def draw_bradley_terry_shift(reward_a: float = 0.8, reward_b: float = -0.4, shift: float = 1.5):
    """Bradley-Terry sees only the reward difference: a pair and the same pair shifted by ``shift``
    have the same difference (left), hence the same win probability sigma(r_a - r_b) (right)."""
    figure, (rewards, curve) = plt.subplots(1, 2, figsize=(10, 3.4), gridspec_kw={"width_ratios": [1, 1.3]})
    gap = reward_a - reward_b
    for row, (offset, label) in enumerate([(0.0, "r"), (shift, f"r + {shift:g}")]):
        a, b = reward_a + offset, reward_b + offset
        rewards.plot([b, a], [row, row], "o", color="C0", ms=8)
        rewards.annotate("", xy=(a, row + 0.18), xytext=(b, row + 0.18), arrowprops={"arrowstyle": "<->"})
        rewards.text((a + b) / 2, row + 0.28, f"d = {gap:.1f}", ha="center")
        rewards.text(b, row - 0.22, "$y_l$", ha="center", va="top")
        rewards.text(a, row - 0.22, "$y_w$", ha="center", va="top")
        rewards.text(reward_b - 1.1, row, label, ha="right", va="center")
    rewards.set_xlim(reward_b - 2.2, reward_a + shift + 0.8)
    rewards.set_ylim(-0.7, 1.7)
    rewards.set_yticks([])
    rewards.set_xlabel("reward of a response to one prompt")
    rewards.set_title("Shift both rewards: the gap stays")
    d = np.linspace(-6, 6, 241)
    curve.plot(d, 1 / (1 + np.exp(-d)), color="C1")
    p = 1 / (1 + np.exp(-gap))
    curve.plot([gap], [p], "o", color="C0", ms=8)
    curve.annotate(
        f"both pairs: d = {gap:.1f}, P = {p:.2f}",
        xy=(gap, p),
        xytext=(-5.6, 0.85),
        arrowprops={"arrowstyle": "->"},
    )
    curve.axhline(0.5, color="grey", lw=0.8, ls=":")
    curve.axvline(0.0, color="grey", lw=0.8, ls=":")
    curve.set_xlabel("reward difference $d = r(x, y_w) - r(x, y_l)$")
    curve.set_ylabel(r"$P(y_w \succ y_l) = \sigma(d)$")
    curve.set_title("Bradley-Terry: the probability depends on d alone")
    curve.grid(alpha=0.3)
    figure.tight_layout()
    return figure


# --- 04 ---


def draw_dpo_gradient_weight():
    """The weight sigma(-u) with which DPO's gradient pushes a pair, against its implicit reward
    margin u: near 1 for pairs ranked the wrong way, 1/2 at the start, vanishing once a pair is
    ranked right by a wide margin; unlikelihood pushes every pair with weight 1."""
    figure, ax = plt.subplots(figsize=(7.5, 3.6))
    u = np.linspace(-8, 8, 321)
    ax.axvspan(-8, 0, color="C3", alpha=0.08)
    ax.axvspan(0, 8, color="C2", alpha=0.08)
    ax.plot(u, 1 / (1 + np.exp(u)), color="C0", lw=2, label=r"DPO: weight $\sigma(-u)$")
    ax.plot(u, np.ones_like(u), "k--", lw=1, label="unlikelihood: weight 1 for every pair")
    ax.plot([0], [0.5], "o", color="C0")
    ax.annotate(
        r"start ($\pi_\theta = \pi_{ref}$): 1/2", xy=(0, 0.5), xytext=(0.8, 0.62), arrowprops={"arrowstyle": "->"}
    )
    ax.text(-7.6, 0.3, "ranked the wrong way:\npushed hard", color="C3")
    ax.text(3.2, 0.3, "ranked right by a wide\nmargin: left alone", color="C2")
    ax.set_xlim(-8, 8)
    ax.set_ylim(0, 1.15)
    ax.set_xlabel(r"implicit reward margin $u = \hat r_w - \hat r_l$, with $\hat r = \beta\log(\pi_\theta/\pi_{ref})$")
    ax.set_ylabel("weight of the pair's gradient")
    ax.set_title("How hard DPO pushes on a pair")
    ax.legend(loc="center right", bbox_to_anchor=(1.0, 0.72), fontsize=8)
    figure.tight_layout()
    return figure


# --- 05 ---


# --- 06 ---


# --- end ---
