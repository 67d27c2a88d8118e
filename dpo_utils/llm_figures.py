"""Figures that explain a mechanism of the language-model notebooks (07-12): one DPO step, fp32 master
weights under autocast, where each loss variant stops pushing, the iterative loop, best-of-N as a
selection. Drawn with matplotlib; each function draws one figure and returns it.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from dpo_utils.losses import dpo_loss


def _box(ax, x, y, text, colour="C0", width=None):
    style = dict(boxstyle="round,pad=0.4", facecolor=colour, alpha=0.22, edgecolor=colour)
    ax.text(x, y, text, ha="center", va="center", fontsize=9, bbox=style, wrap=width is not None)


def _arrow(ax, start, end, label=""):
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="->", color="0.3", shrinkA=0, shrinkB=0))
    if label:
        ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.06, label, ha="center", fontsize=8, color="0.3")


def _diagram(size=(9, 3.6), title=""):
    figure, ax = plt.subplots(figsize=size)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    ax.set_title(title)
    return figure, ax


def draw_dpo_step():
    """One DPO step (notebook 07): four sequence log-probs, two log-ratios, one margin, one loss; only the
    policy's two log-probs carry gradients."""
    figure, ax = _diagram(size=(10, 3.6), title="One DPO step: what is computed, and where the gradient flows")
    _box(ax, 0.12, 0.75, "policy\nlog p(chosen), log p(rejected)", "C0")
    _box(ax, 0.12, 0.25, "reference (frozen, computed once)\nlog p(chosen), log p(rejected)", "C7")
    _box(ax, 0.44, 0.5, "log-ratios, policy - reference\nh_w (chosen), h_l (rejected)", "C2")
    _box(ax, 0.71, 0.5, "margin\nu = beta (h_w - h_l)", "C1")
    _box(ax, 0.92, 0.5, "loss\n-log sigmoid(u)", "C3")
    _arrow(ax, (0.2, 0.66), (0.32, 0.56))
    _arrow(ax, (0.2, 0.34), (0.32, 0.44))
    _arrow(ax, (0.57, 0.5), (0.64, 0.5))
    _arrow(ax, (0.78, 0.5), (0.865, 0.5))
    ax.annotate("", xy=(0.12, 0.88), xytext=(0.92, 0.62), arrowprops=dict(arrowstyle="->", color="C3", ls="--"))
    ax.text(0.55, 0.83, "gradient, weighted by sigmoid(-u): chosen up, rejected down", color="C3", fontsize=8.5)
    return figure


def draw_master_weights():
    """Mixed precision (notebook 08): fp32 master weights, half-precision compute under autocast, and a
    loss scale for fp16 so small gradients do not underflow."""
    figure, ax = _diagram(
        size=(10, 3.8), title="Mixed precision: the weights stay fp32, the matmuls run in bf16 or fp16"
    )
    _box(ax, 0.1, 0.5, "fp32 master weights\n(what AdamW updates)", "C0")
    _box(ax, 0.42, 0.8, "forward under autocast\nmatmuls in bf16 / fp16", "C1")
    _box(ax, 0.8, 0.8, "loss in fp32\nx loss scale (fp16 only)", "C3")
    _box(ax, 0.8, 0.2, "backward: half-precision grads,\naccumulated into fp32 .grad", "C1")
    _box(ax, 0.42, 0.2, "unscale, clip, skip if inf;\nAdamW step in fp32", "C2")
    _arrow(ax, (0.17, 0.6), (0.3, 0.72), "")
    ax.text(0.13, 0.7, "a half-precision\ncopy per matmul", fontsize=8, color="0.3")
    _arrow(ax, (0.55, 0.8), (0.68, 0.8))
    _arrow(ax, (0.8, 0.7), (0.8, 0.3))
    _arrow(ax, (0.66, 0.2), (0.56, 0.2))
    _arrow(ax, (0.3, 0.28), (0.17, 0.4))
    ax.text(0.13, 0.24, "updates of 1e-8\nare not rounded away", fontsize=8, color="0.3")
    return figure


def draw_loss_shapes(margin_range: float = 6.0):
    """The variants' losses (notebook 09) as functions of the margin u = beta (h_w - h_l): DPO's keeps
    pushing, hinge stops at a margin of 1, IPO pulls the log-ratio gap to a target and back."""
    u = torch.linspace(-margin_range, margin_range, 241)
    zeros = torch.zeros_like(u)
    figure, ax = plt.subplots(figsize=(6, 3.6))
    for loss_type, style in (("sigmoid", "-"), ("hinge", "--"), ("ipo_sum", ":")):
        out = dpo_loss(u, zeros, zeros, zeros, beta=1.0, loss_type=loss_type)
        ax.plot(u.numpy(), out.losses.numpy(), style, label=loss_type)
    ax.set_ylim(-0.2, 6)
    ax.axvline(0, color="0.8", lw=0.8)
    ax.set_xlabel("margin u = beta (h_w - h_l), beta = 1")
    ax.set_ylabel("loss of one pair")
    ax.set_title("Where each loss stops pushing")
    ax.legend()
    figure.tight_layout()
    return figure


def draw_iterative_loop():
    """Iterative DPO (notebook 11): sample from the current policy, score, pair, train; the trained policy
    samples the next round's pairs."""
    figure, ax = _diagram(
        size=(7, 4), title="Iterative (on-policy) DPO: each round's pairs come from the last round's policy"
    )
    places = {"sample": (0.5, 0.85), "score": (0.85, 0.5), "pair": (0.5, 0.15), "train": (0.15, 0.5)}
    texts = {
        "sample": "sample k completions\nper prompt from the policy",
        "score": "score them\n(the reward: VADER)",
        "pair": "pair best against worst\n(cut samples dropped)",
        "train": "train DPO on the pairs\n(reference: the start)",
    }
    for i, (name, (x, y)) in enumerate(places.items()):
        _box(ax, x, y, texts[name], f"C{i}")
    for a, b in [
        ((0.62, 0.78), (0.8, 0.6)),
        ((0.8, 0.4), (0.62, 0.22)),
        ((0.38, 0.22), (0.2, 0.4)),
        ((0.2, 0.6), (0.38, 0.78)),
    ]:
        _arrow(ax, a, b)
    ax.text(0.5, 0.5, "round r", ha="center", va="center", fontsize=11, color="0.4")
    return figure


def draw_best_of_n(n: int = 8, seed: int = 0):
    """Best-of-N (notebook 12): N samples from the reference, the reward picks the highest; no weight changes."""
    rewards = np.random.default_rng(seed).normal(0, 0.4, size=n)
    best = int(np.argmax(rewards))
    figure, ax = plt.subplots(figsize=(6, 3.2))
    colours = ["C2" if i == best else "C7" for i in range(n)]
    ax.bar(range(1, n + 1), rewards, color=colours)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.annotate(
        "kept",
        xy=(best + 1, rewards[best]),
        xytext=(best + 1, rewards[best] + 0.25),
        ha="center",
        arrowprops=dict(arrowstyle="->"),
    )
    ax.set_ylim(min(0, rewards.min()) - 0.1, rewards.max() + 0.45)
    ax.set_xlabel(f"sample from the reference (N = {n})")
    ax.set_ylabel("reward")
    ax.set_title(f"Best-of-{n}: the reward selects, the model is unchanged")
    figure.tight_layout()
    return figure
