"""The acyl-isomer census of drugs_dev (``benchmarks.acyl_isomers``): its share and summary on known inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.acyl_isomers import summary, syn_share


def _planar(angle: float) -> np.ndarray:
    """Four atoms a-b-c-d with dihedral ``angle`` (radians)."""
    return np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.5], [math.cos(angle), math.sin(angle), 1.5]])


def test_syn_share_counts_dihedrals_within_90_degrees_of_zero() -> None:
    x = np.stack([_planar(a) for a in (0.1, -0.3, 3.0, -2.9, 1.5)])
    assert syn_share(x, (0, 1, 2, 3)) == pytest.approx(3 / 5)


def test_summary_error_and_absent_isomer() -> None:
    rows = [
        {"references": 0.0, "etkdg": 0.0, "network": 0.3, "product": 0.1},
        {"references": 1.0, "etkdg": 1.0, "network": 0.6, "product": 1.0},
        {"references": 0.5, "etkdg": 0.0, "network": 0.5, "product": 0.0},
    ]
    s = summary(rows)
    assert s["network"]["mae"] == pytest.approx((0.3 + 0.4 + 0.0) / 3)
    assert s["network"]["absent_isomer"] == pytest.approx((0.3 + 0.4) / 2)  # the two one-sided bonds only
    assert s["product"]["absent_isomer"] == pytest.approx(0.05)
    assert s["etkdg"]["mae"] == pytest.approx(0.5 / 3)
