"""Figures that explain a mechanism (not a result) of notebooks 00-06: the ladder, Bradley-Terry's
shift invariance, DPO's gradient weight, beta along the reward-KL trade-off, shifted labels and the
completion mask, a packed pair's attention. Drawn with matplotlib, so they are tested and restyled in
one place; each function draws one figure and returns it (07-12: :mod:`dpo_utils.llm_figures`).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from dpo_utils.data import TokenizedPair
from dpo_utils.packing import pack_pairs
from dpo_utils.tabular import expected_reward, kl_divergence, make_problem, optimal_policy

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
