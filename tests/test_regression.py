import numpy as np
import pytest

from dpo_utils.gradcheck import finite_difference_gradient, relative_error
from dpo_utils.regression import (
    closed_form_theta,
    gradient_descent,
    make_data,
    max_stable_lr,
    mse_gradient,
    mse_loss,
    per_sample_gradients,
)


def test_gradient_matches_finite_differences_and_has_x_factor():
    x, y = make_data(50, seed=1)
    for theta in (-1.0, 0.3, 2.0):
        numeric = finite_difference_gradient(lambda t: mse_loss(t[0], x, y), theta)[0]
        assert relative_error(mse_gradient(theta, x, y), numeric) < 1e-6
        # the article's (y_hat - y) without the x_i factor is not the gradient
        assert abs(np.mean(theta * x - y) - numeric) > 1e-3


def test_per_sample_gradient_has_one_row_per_sample():
    x, y = make_data(100)
    assert per_sample_gradients(0.5, x, y).shape == (100, 1)


def test_gradient_descent_reaches_closed_form():
    x, y = make_data()
    thetas, losses = gradient_descent(0.0, x, y, lr=0.1, steps=300)
    assert thetas[-1] == pytest.approx(closed_form_theta(x, y), abs=1e-8)
    assert losses[-1] <= losses[0]


def test_step_above_two_over_curvature_diverges():
    x, y = make_data()
    limit = max_stable_lr(x)
    _, ok = gradient_descent(0.0, x, y, lr=0.95 * limit, steps=500)
    _, bad = gradient_descent(0.0, x, y, lr=1.05 * limit, steps=500)
    assert ok[-1] < 1e-2 and bad[-1] > 1e3
