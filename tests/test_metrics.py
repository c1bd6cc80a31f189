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


def test_aligned_distance_ignores_rotation_permutation_and_reflection() -> None:
    from benchmarks.metrics import aligned_distances, x_w2_aligned

    rng = np.random.default_rng(2)
    a = rng.normal(size=(5, 4, 3))
    theta = 0.7
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    b = a[:, [2, 0, 3, 1], :] @ rot.T + 1.5
    d = aligned_distances(a.reshape(5, -1), b.reshape(5, -1), dim=3)
    assert np.allclose(np.diag(d), 0.0, atol=1e-8)
    assert (d[~np.eye(5, dtype=bool)] > 1e-3).all()
    assert x_w2_aligned(a.reshape(5, -1), b[::-1].reshape(5, -1), dim=3) == pytest.approx(0.0, abs=1e-8)
    # the exhaustive (n <= 6) and the Hungarian (n > 6) branches agree
    big = rng.normal(size=(3, 7, 2))
    perm = big[:, rng.permutation(7), :]
    assert np.allclose(np.diag(aligned_distances(big.reshape(3, -1), perm.reshape(3, -1), dim=2)), 0.0, atol=1e-8)
