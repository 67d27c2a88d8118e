"""Every mechanism figure (dpo_utils.figures, dpo_utils.llm_figures) draws something: a figure with at least one
non-empty axes."""

import inspect

import matplotlib
import pytest

from dpo_utils import figures, llm_figures

matplotlib.use("Agg")
DRAWERS = [
    f
    for module in (figures, llm_figures)
    for name, f in inspect.getmembers(module, inspect.isfunction)
    if name.startswith("draw_") and f.__module__ == module.__name__
]


def test_there_are_figures():
    assert DRAWERS


@pytest.mark.parametrize("draw", DRAWERS, ids=lambda f: f.__name__)
def test_each_figure_draws(draw):
    figure = draw()
    try:
        assert isinstance(figure, matplotlib.figure.Figure)
        axes = figure.get_axes()
        assert axes and any(ax.lines or ax.patches or ax.images or ax.collections or ax.texts for ax in axes)
    finally:
        matplotlib.pyplot.close(figure)
