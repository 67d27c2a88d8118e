r"""The MSE toy problem of notebooks 01-02: one weight, least squares, gradient descent.

Model :math:`\hat y_i = \theta x_i`; loss (mean over :math:`n` samples)

.. math::
    L(\theta) = \frac{1}{2n}\sum_i (\theta x_i - y_i)^2, \qquad
    \nabla L(\theta) = \frac{1}{n}\sum_i x_i(\theta x_i - y_i),

minimised in closed form by :math:`\theta^* = \sum_i x_i y_i / \sum_i x_i^2`. Gradient descent
with step :math:`\alpha` converges iff :math:`0 < \alpha < 2 / \overline{x^2}`.
"""

from __future__ import annotations

import numpy as np


def make_data(n: int = 100, seed: int = 0, noise: float = 0.05):
    """The source article's data: ``y = 3x + 2 + noise``, both standardised. Shapes ``(n, 1)``."""
    rng = np.random.RandomState(seed)
    x = rng.rand(n, 1)
    y = 3 * x + 2 + rng.normal(scale=noise, size=x.shape)
    return (x - x.mean()) / x.std(), (y - y.mean()) / y.std()


def mse_loss(theta: float, x: np.ndarray, y: np.ndarray) -> float:
    """:math:`\\frac{1}{2n}\\sum_i(\\theta x_i - y_i)^2` as a Python float."""
    return float(0.5 * np.mean((theta * x - y) ** 2))


def per_sample_gradients(theta: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """:math:`x_i(\\theta x_i - y_i)` for every sample, shape ``(n, 1)``: *not* a gradient of L."""
    return x * (theta * x - y)


def mse_gradient(theta: float, x: np.ndarray, y: np.ndarray) -> float:
    """:math:`\\nabla L(\\theta)`: the mean of the per-sample gradients, a scalar."""
    return float(np.mean(per_sample_gradients(theta, x, y)))


def closed_form_theta(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares optimum :math:`\\sum x_i y_i / \\sum x_i^2`."""
    return float(np.sum(x * y) / np.sum(x * x))


def gradient_descent(theta0: float, x, y, lr: float, steps: int):
    """Run ``steps`` updates :math:`\\theta \\leftarrow \\theta - \\alpha\\nabla L`.

    Returns ``(thetas, losses)``, each of length ``steps + 1`` (the start included).
    Divergent runs are stopped once the loss overflows and padded with ``inf``.
    """
    theta = float(theta0)
    thetas, losses = [theta], [mse_loss(theta, x, y)]
    for _ in range(steps):
        theta -= lr * mse_gradient(theta, x, y)
        loss = mse_loss(theta, x, y)
        if not np.isfinite(loss) or loss > 1e30:
            pad = steps + 1 - len(losses)
            return thetas + [np.inf] * pad, losses + [np.inf] * pad
        thetas.append(theta)
        losses.append(loss)
    return thetas, losses


def max_stable_lr(x: np.ndarray) -> float:
    """Gradient descent on this loss diverges for step sizes above ``2 / mean(x**2)``."""
    return float(2.0 / np.mean(x * x))
