import itertools

import numpy as np
import pytest

from benchmarks.metrics import com_free, e_w2, x_w2


def test_x_w2_zero_for_permuted_and_translated_copies() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 8))
    b = a[rng.permutation(50)] + np.tile([1.0, -2.0], 4)  # every sample shifted by one vector: COM removal
    assert x_w2(a, b, dim=2) == pytest.approx(0.0, abs=1e-6)


def test_x_w2_matches_brute_force_assignment() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    fa, fb = com_free(a, 3), com_free(b, 3)
    best = min(np.mean([np.sum((fa[i] - fb[p[i]]) ** 2) for i in range(6)]) for p in itertools.permutations(range(6)))
    assert x_w2(a, b, dim=3) == pytest.approx(np.sqrt(best))


def test_e_w2_known_answer() -> None:
    assert e_w2(np.array([3.0, 1.0, 2.0]), np.array([2.0, 4.0, 3.0])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="equal"):
        e_w2(np.zeros(3), np.zeros(4))
