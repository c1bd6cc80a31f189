"""Wasserstein-2 metrics of the synthetic benchmark, as in the code behind the published table.

- ``x_w2``: square root of the exact optimal-transport cost between two equal-size sample sets, with
  the squared Euclidean ground cost on flattened COM-free coordinates (an assignment problem, solved
  exactly by the Hungarian algorithm).
- ``e_w2``: the exact 1-D optimal-transport cost between two energy samples with squared ground cost
  (matching sorted values), without a square root.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["x_w2", "e_w2", "com_free"]


def com_free(x: np.ndarray, dim: int) -> np.ndarray:
    """``[B, n * d]`` or ``[B, n, d]`` -> ``[B, n * d]`` with each sample's centre removed."""
    b = x.shape[0]
    y = x.reshape(b, -1, dim)
    return (y - y.mean(1, keepdims=True)).reshape(b, -1)


def x_w2(a: np.ndarray, b: np.ndarray, dim: int) -> float:
    """Exact W2 between point clouds ``a`` and ``b`` (same number of samples)."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"x_w2 needs equal sample counts, got {a.shape[0]} and {b.shape[0]}")
    fa, fb = com_free(a.astype(np.float64), dim), com_free(b.astype(np.float64), dim)
    cost = (fa * fa).sum(1)[:, None] + (fb * fb).sum(1)[None, :] - 2.0 * fa @ fb.T
    cost = np.maximum(cost, 0.0)
    rows, cols = linear_sum_assignment(cost)
    return float(np.sqrt(cost[rows, cols].mean()))


def e_w2(a: np.ndarray, b: np.ndarray) -> float:
    """Exact 1-D OT cost ``mean (sort(a) - sort(b))^2`` between equal-size energy samples."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"e_w2 needs equal sample counts, got {a.shape[0]} and {b.shape[0]}")
    return float(np.mean((np.sort(a.astype(np.float64)) - np.sort(b.astype(np.float64))) ** 2))
