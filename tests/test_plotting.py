"""The reward-KL scatter: one colour and one legend entry per group of runs."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dpo_utils.plotting import plot_reward_vs_kl  # noqa: E402


def result(reward, kl):
    return {"reward": reward, "kl": kl, "reward_low": reward - 0.1, "reward_high": reward + 0.1, "kl_sem": 0.2}


RESULTS = {
    "reference": result(0.3, 0.0),
    "DPO": result(0.7, 4.0),
    "DPO, seed 1": result(0.75, 3.7),
    "ORPO": result(0.4, 1.1),
    "ORPO, seed 1": result(0.42, 0.9),
}


def point_colours(fig):
    return [line.get_color() for line in fig.axes[0].lines if line.get_marker() == "o"]


def test_groups_share_a_colour_and_a_legend_entry():
    groups = {"DPO, seed 1": "DPO", "ORPO, seed 1": "ORPO"}
    fig = plot_reward_vs_kl(RESULTS, groups=groups)
    colours = point_colours(fig)
    assert colours[1] == colours[2] and colours[3] == colours[4]
    assert len({colours[0], colours[1], colours[3]}) == 3
    assert [text.get_text() for text in fig.axes[0].get_legend().get_texts()] == ["reference", "DPO", "ORPO"]
    plt.close(fig)


def test_without_groups_every_run_is_its_own_entry():
    fig = plot_reward_vs_kl(RESULTS)
    assert len(set(point_colours(fig))) == len(RESULTS)
    assert [text.get_text() for text in fig.axes[0].get_legend().get_texts()] == list(RESULTS)
    plt.close(fig)
