r"""Check a hand-derived gradient numerically.

Central differences: :math:`\partial f/\partial\theta_j \approx
\frac{f(\theta + h e_j) - f(\theta - h e_j)}{2h}`, error :math:`O(h^2)`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def finite_difference_gradient(f: Callable[[np.ndarray], float], theta, h: float = 1e-6) -> np.ndarray:
    """Central-difference gradient of a scalar function ``f`` at ``theta`` (float64)."""
    theta = np.atleast_1d(np.asarray(theta, dtype=np.float64))
    grad = np.zeros_like(theta)
    for j in range(theta.size):
        step = np.zeros_like(theta)
        step.flat[j] = h
        grad.flat[j] = (f(theta + step) - f(theta - step)) / (2 * h)
    return grad


def relative_error(a, b) -> float:
    """``|a - b| / max(|a|, |b|, 1e-12)`` over all entries (max)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-12)))
