"""Coverage and matching metrics of a generated conformer ensemble against a reference ensemble.

From the ``L × K`` RMSD matrix ``D`` (references × generated, Å; ``../shared/docs/BENCHMARKS.md``):

.. math::

    \\mathrm{COV\\text{-}R}(\\delta) = \\tfrac1L \\textstyle\\sum_l [\\min_k D_{lk} < \\delta], \\qquad
    \\mathrm{AMR\\text{-}R} = \\tfrac1L \\textstyle\\sum_l \\min_k D_{lk},

and COV-P, AMR-P the same over the generated conformers (``\\min_l D_{lk}``). Thresholds are strict.
A molecule for which a method produced nothing is a failure: coverage 0 at every threshold and no
AMR (``nan``, left out of the AMR averages, which therefore say over how many molecules they run).

Example:
    >>> d = np.array([[0.3, 1.2], [0.9, 2.0]])
    >>> s = score_matrix(d)
    >>> s.cov_r_at(0.5), s.amr_r
    (0.5, 0.6)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "REPORT_THRESHOLDS",
    "THRESHOLDS",
    "EnsembleScore",
    "SummaryScore",
    "failed_score",
    "recall_by_group",
    "record_score",
    "score_matrix",
    "summarize",
]

THRESHOLDS: tuple[float, ...] = tuple(0.125 * i for i in range(20))  # 0, 0.125, …, 2.375 Å
REPORT_THRESHOLDS: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25)


def _index(thresholds: Sequence[float], delta: float) -> int:
    for i, t in enumerate(thresholds):
        if math.isclose(t, delta, abs_tol=1e-9):
            return i
    raise ValueError(f"threshold {delta} Å is not on the grid {list(thresholds)}")


@dataclass(frozen=True)
class EnsembleScore:
    """One molecule, one method.

    Attributes:
        thresholds: ``[T]`` Å.
        cov_r, cov_p: ``[T]`` fractions in ``[0, 1]``.
        amr_r, amr_p: Å; ``nan`` for a failure.
        num_ref, num_gen: ``L`` and the number of generated conformers scored.
    """

    thresholds: tuple[float, ...]
    cov_r: np.ndarray
    cov_p: np.ndarray
    amr_r: float
    amr_p: float
    num_ref: int
    num_gen: int

    @property
    def failed(self) -> bool:
        return self.num_gen == 0

    def cov_r_at(self, delta: float) -> float:
        return float(self.cov_r[_index(self.thresholds, delta)])

    def cov_p_at(self, delta: float) -> float:
        return float(self.cov_p[_index(self.thresholds, delta)])


def score_matrix(d: np.ndarray, thresholds: Sequence[float] = THRESHOLDS) -> EnsembleScore:
    """Scores of an ``[L, K]`` RMSD matrix (``L ≥ 1``); ``K = 0`` gives :func:`failed_score`."""
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] == 0:
        raise ValueError(f"expected an [L, K] RMSD matrix with L >= 1, got shape {d.shape}")
    if d.shape[1] == 0:
        return failed_score(d.shape[0], thresholds)
    if not np.isfinite(d).all() or (d < 0).any():
        raise ValueError("RMSD matrix entries must be finite and non-negative")
    t = np.asarray(thresholds, dtype=np.float64)
    best_r = d.min(axis=1)  # [L] nearest generated conformer for each reference
    best_p = d.min(axis=0)  # [K] nearest reference for each generated conformer
    return EnsembleScore(
        thresholds=tuple(float(x) for x in thresholds),
        cov_r=(best_r[None, :] < t[:, None]).mean(axis=1),
        cov_p=(best_p[None, :] < t[:, None]).mean(axis=1),
        amr_r=float(best_r.mean()),
        amr_p=float(best_p.mean()),
        num_ref=int(d.shape[0]),
        num_gen=int(d.shape[1]),
    )


def recall_by_group(d: np.ndarray, groups: np.ndarray, num_groups: int, threshold: float = 1.0) -> list[float]:
    """COV-R at ``threshold`` (Å) among the references of each group: ``d`` ``[L, K]`` RMSD matrix (``K = 0``:
    nothing covered), ``groups`` ``[L]`` ints in ``[0, num_groups)``; ``nan`` for an empty group."""
    d = np.asarray(d, dtype=np.float64)
    groups = np.asarray(groups)
    if d.ndim != 2 or groups.shape != (d.shape[0],):
        raise ValueError(f"expected an [L, K] matrix and [L] groups, got {d.shape} and {groups.shape}")
    covered = d.min(axis=1) < threshold if d.shape[1] else np.zeros(d.shape[0], dtype=bool)
    return [float(covered[groups == g].mean()) if (groups == g).any() else math.nan for g in range(num_groups)]


def failed_score(num_ref: int, thresholds: Sequence[float] = THRESHOLDS) -> EnsembleScore:
    """A molecule for which nothing was generated: zero coverage, no AMR."""
    zeros = np.zeros(len(thresholds))
    return EnsembleScore(tuple(float(x) for x in thresholds), zeros, zeros.copy(), math.nan, math.nan, num_ref, 0)


def record_score(rec: Mapping[str, Any], thresholds: Sequence[float], num_ref: int) -> EnsembleScore:
    """The :class:`EnsembleScore` of one method's per-molecule record in a benchmark run's JSON results."""
    return EnsembleScore(
        tuple(float(t) for t in thresholds),
        np.asarray(rec["cov_r"], dtype=np.float64),
        np.asarray(rec["cov_p"], dtype=np.float64),
        float(rec["amr_r"]),
        float(rec["amr_p"]),
        int(num_ref),
        int(rec["scored"]),
    )


@dataclass(frozen=True)
class SummaryScore:
    """Mean and median over molecules (failures included as zero coverage; AMR over successes only).

    Attributes:
        cov_r_mean, cov_r_median, cov_p_mean, cov_p_median: ``[T]`` fractions.
        amr_r_mean, amr_r_median, amr_p_mean, amr_p_median: Å over the ``num_molecules - num_failed``
            molecules with output (``nan`` if none).
    """

    thresholds: tuple[float, ...]
    cov_r_mean: np.ndarray
    cov_r_median: np.ndarray
    cov_p_mean: np.ndarray
    cov_p_median: np.ndarray
    amr_r_mean: float
    amr_r_median: float
    amr_p_mean: float
    amr_p_median: float
    num_molecules: int
    num_failed: int

    def at(self, name: str, delta: float) -> float:
        """``at("cov_r_mean", 1.0)``: one entry of a ``[T]`` field."""
        return float(getattr(self, name)[_index(self.thresholds, delta)])


def summarize(scores: Sequence[EnsembleScore]) -> SummaryScore:
    """Aggregate per-molecule scores (all on the same thresholds)."""
    if not scores:
        raise ValueError("no molecules to summarize")
    thresholds = scores[0].thresholds
    if any(s.thresholds != thresholds for s in scores):
        raise ValueError("scores use different threshold grids")
    cov_r = np.stack([s.cov_r for s in scores])
    cov_p = np.stack([s.cov_p for s in scores])
    ok = [s for s in scores if not s.failed]
    amr_r = np.array([s.amr_r for s in ok])
    amr_p = np.array([s.amr_p for s in ok])

    def stat(x: np.ndarray, f: str) -> float:
        return float(getattr(np, f)(x)) if len(x) else math.nan

    return SummaryScore(
        thresholds=thresholds,
        cov_r_mean=cov_r.mean(axis=0),
        cov_r_median=np.median(cov_r, axis=0),
        cov_p_mean=cov_p.mean(axis=0),
        cov_p_median=np.median(cov_p, axis=0),
        amr_r_mean=stat(amr_r, "mean"),
        amr_r_median=stat(amr_r, "median"),
        amr_p_mean=stat(amr_p, "mean"),
        amr_p_median=stat(amr_p, "median"),
        num_molecules=len(scores),
        num_failed=len(scores) - len(ok),
    )
