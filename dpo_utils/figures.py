"""Figures that explain a mechanism (not a result): drawn with matplotlib, so they are tested and
restyled in one place. Each function draws one figure and returns it.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from dpo_utils.data import TokenizedPair
from dpo_utils.packing import pack_pairs
from dpo_utils.tabular import expected_reward, kl_divergence, make_problem, optimal_policy

# --- 00 ---


# --- 03 ---


# --- 04 ---


# --- 05 ---


def draw_beta_tradeoff(betas=(2.0, 0.5, 0.1), prompt: int = 0):
    r"""How :math:`\beta` moves :math:`\pi^* \propto \pi_{ref}\,e^{r/\beta}` (notebook 05's problem).

    Left: :math:`\pi^*(\cdot|x)` of one prompt for each of ``betas`` next to :math:`\pi_{ref}`
    (:math:`\beta = \infty`), the mass tilting towards high reward as :math:`\beta` falls. Right: the
    expected reward against :math:`\mathrm{KL}(\pi^*\|\pi_{ref})` as :math:`\beta` sweeps, each of ``betas``
    marked with a segment of slope :math:`\beta`: the price of one nat of KL, in reward, at that point.
    """
    problem = make_problem(n_prompts=4, n_responses=6, seed=0)
    ref, reward = problem.ref_probs, problem.reward

    def point(beta):
        pi = optimal_policy(ref, reward, beta)
        return kl_divergence(pi, ref).item(), expected_reward(pi, reward).item()

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1.1, 1]})
    order = reward[prompt].argsort().tolist()  # responses from lowest to highest reward
    x = np.arange(len(order), dtype=float)
    rows = [("pi_ref (beta = inf)", ref)] + [(f"pi*, beta = {b:g}", optimal_policy(ref, reward, b)) for b in betas]
    width = 0.8 / len(rows)
    for k, (label, pi) in enumerate(rows):
        colour = "0.6" if k == 0 else f"C{k - 1}"
        left.bar(x + (k - (len(rows) - 1) / 2) * width, pi[prompt, order].tolist(), width, color=colour, label=label)
    left.set_xticks(x, [f"y{j}\nr={reward[prompt, j]:.2f}" for j in order])
    left.set(ylabel=f"probability (prompt {prompt})", title="pi* = pi_ref exp(r / beta) / Z, responses by reward")
    left.legend(fontsize=8)

    sweep = torch.logspace(-1.5, 1.5, 120, dtype=torch.float64).tolist()
    curve = [point(b) for b in sweep]
    right.plot([k for k, _ in curve], [r for _, r in curve], "k-", lw=1, label="pi*_beta as beta varies")
    right.plot(*point(1e6), "o", color="0.6", label="pi_ref (beta = inf)")
    for k, b in enumerate(betas):
        kl, r = point(b)
        span = 0.25 * max(kl, 0.2)
        right.plot([kl - span, kl + span], [r - b * span, r + b * span], color=f"C{k}", lw=2)
        right.plot(kl, r, "o", color=f"C{k}")
        right.annotate(f"beta = {b:g}: slope {b:g}", (kl, r), xytext=(8, -14), textcoords="offset points", fontsize=8)
    right.set(xlabel="KL(pi* || pi_ref)  [nats]", ylabel="expected reward", title="smaller beta: more reward, more KL")
    right.legend(fontsize=8, loc="lower right")
    right.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# --- 06 ---

DEMO_TOKENS = ["<|im_start|>", "assistant", "Ċ", "A", "Ġquiet", "Ġstory", ".", "<|im_end|>", "Ċ"]
DEMO_MASK = [0, 0, 0, 1, 1, 1, 1, 1, 1]


def draw_shifted_labels(tokens: list[str] | None = None, completion_mask: list[int] | None = None):
    r"""The one-position shift and the completion mask of :func:`dpo_utils.logprobs.sequence_logprobs`.

    Column :math:`t` is one position of the sequence: its input token, the label its logits are scored
    on (the token at :math:`t+1`), and whether that label is a completion token, so that
    :math:`\log\pi(\text{label})` enters :math:`\log\pi(y|x)`. The last position predicts nothing.
    """
    tokens = DEMO_TOKENS if tokens is None else list(tokens)
    mask = (DEMO_MASK if completion_mask is None else [int(m) for m in completion_mask])[: len(tokens)]
    n = len(tokens)
    shade = lambda k: "#f4d9b0" if mask[k] else "#dddddd"  # completion, prompt
    fig, ax = plt.subplots(figsize=(max(6.0, 1.05 * n + 2.2), 2.9))
    tops = [0.0, -1.6, -2.6]  # the rows' top edges, a gap for the arrows below the first
    for t in range(n):
        scored = t + 1 < n and mask[t + 1] == 1
        cells = [
            (tokens[t], shade(t)),
            (tokens[t + 1], shade(t + 1)) if t + 1 < n else ("(none)", "white"),
            ("yes" if scored else "no", "#9fd39f" if scored else "white"),
        ]
        for top, (text, colour) in zip(tops, cells):
            ax.add_patch(plt.Rectangle((t, top - 0.9), 0.94, 0.9, color=colour))
            ax.text(t + 0.47, top - 0.45, text, ha="center", va="center", fontsize=8)
        if t + 1 < n:  # the token at t+1 becomes the label of position t
            ax.annotate("", (t + 0.47, -1.6), (t + 1.47, -0.9), arrowprops={"arrowstyle": "->", "color": "0.45"})
    for top, label in zip(tops, ["input token at t", "label = token at t+1", "counts in log pi(y|x)"]):
        ax.text(-0.15, top - 0.45, label, ha="right", va="center", fontsize=9)
    ax.set(
        xlim=(-2.4, n), ylim=(-3.7, 0.1), title="The logits at t score the token at t+1; only completion labels count"
    )
    ax.set_xticks([t + 0.47 for t in range(n)], [f"t={t}" for t in range(n)], fontsize=7)
    ax.set_xlabel("position t        grey: prompt token, tan: completion token", fontsize=8)
    ax.tick_params(left=False, labelleft=False, bottom=False)
    for side in ax.spines.values():
        side.set_visible(False)
    fig.tight_layout()
    return fig


def draw_pair_attention(
    prompt: list[str] | None = None, chosen: list[str] | None = None, rejected: list[str] | None = None
):
    """Who attends to whom when one pair is computed as a single sequence (:func:`dpo_utils.packing.pack_pairs`).

    Left, ``share_prompt=True``: prompt, chosen and rejected in one row, the prompt computed once; the
    rejected completion sees the prompt but not the chosen one. Right, ``share_prompt=False``: prompt +
    chosen and prompt + rejected as two blocks of one row (block-diagonal). Each is the ``allowed``
    mask that ``pack_pairs`` builds (row: the token attending; column: the token it may see).
    """
    prompt = ["Rate", "Ġit", ":"] if prompt is None else list(prompt)
    chosen = ["Ġgreat", "<|im_end|>"] if chosen is None else list(chosen)
    rejected = ["Ġdull", "Ġfilm", "<|im_end|>"] if rejected is None else list(rejected)
    ids = lambda n, start: list(range(start, start + n))
    pair = TokenizedPair(ids(len(prompt), 0), ids(len(chosen), 1000), ids(len(rejected), 2000))
    names = {k: t for k, t in zip(pair.prompt_ids + pair.chosen_ids + pair.rejected_ids, prompt + chosen + rejected)}
    colour = {0: "0.45", 1: "C2", 2: "C3"}  # prompt, chosen, rejected: by thousands of the stand-in ids
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, share in zip(axes, (True, False)):
        packed = pack_pairs([pair], share_prompt=share, row_length=2 * len(prompt) + len(chosen) + len(rejected))
        keep = packed.real[0]
        row_ids = packed.input_ids[0][keep].tolist()
        allowed = packed.allowed[0][keep][:, keep]
        ax.imshow(allowed.float().numpy(), cmap="Blues", vmin=0, vmax=1.4)
        labels = [f"{names[i]} ({p})" for i, p in zip(row_ids, packed.position_ids[0][keep].tolist())]
        ax.set_xticks(range(len(row_ids)), labels, rotation=90, fontsize=8)
        ax.set_yticks(range(len(row_ids)), labels, fontsize=8)
        for tick_x, tick_y, i in zip(ax.get_xticklabels(), ax.get_yticklabels(), row_ids):
            tick_x.set_color(colour[i // 1000])
            tick_y.set_color(colour[i // 1000])
        if share:  # the block where rejected tokens (rows) would see chosen ones (columns)
            rows_, cols = (len(prompt) + len(chosen), len(row_ids)), (len(prompt), len(prompt) + len(chosen))
        else:  # the second block (rows) seeing the first (columns)
            second = packed.position_ids[0][keep].tolist().index(0, 1)
            rows_, cols = (second, len(row_ids)), (0, second)
        centre = ((cols[0] + cols[1] - 1) / 2, (rows_[0] + rows_[1] - 1) / 2)
        ax.text(*centre, "masked", ha="center", va="center", fontsize=9, color="0.3")
        title = (
            "prompt shared: rejected does not see chosen"
            if share
            else "not shared: prompt + chosen | prompt + rejected"
        )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("may attend to (position id in brackets)")
    axes[0].set_ylabel("token attending")
    fig.suptitle("Attention mask of one packed pair: grey prompt, green chosen, red rejected", fontsize=11)
    fig.tight_layout()
    return fig


# --- end ---
