"""Figures that explain a mechanism (not a result): drawn with matplotlib, so they are tested and
restyled in one place. Each function draws one figure and returns it.
"""

from __future__ import annotations

import matplotlib.pyplot as plt

# --- 00 ---


# --- 03 ---


# --- 04 ---


# --- 05 ---


# --- 06 ---


# --- end ---
