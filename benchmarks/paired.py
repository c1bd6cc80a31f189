"""Paired comparison of two conformer methods on the same molecules.

A mean over 40–70 molecules whose coverages spread from 0 to 100 % moves by several points from molecule
sampling alone, so "method beats baseline" is judged per molecule: for every molecule both methods were
scored on, the difference ``method − baseline`` of COV-R(δ) and of AMR-R; reported as the mean difference
with a 95 % bootstrap interval over molecules (percentile, resampling molecules with replacement) and the
count of molecules where the method is better, equal, worse.

A molecule where a method produced nothing counts as zero coverage (as in the summary tables); AMR-R
differences use the molecules where both produced conformers.

Results of several runs can be combined (``bench compare A.json B.json``) when they scored the same molecules
with the same reference caps, e.g. a second run that added a baseline with the same seed.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.coverage import EnsembleScore, record_score
from benchmarks.options import add_compare_arguments as add_arguments

__all__ = [
    "PairedComparison",
    "add_arguments",
    "compare",
    "default_pairs",
    "load_scores",
    "paired_lines",
    "run_from_args",
    "scores_by_dataset",
]

BASELINE_PREFIX = "rdkit"
RELAXED_SUFFIX = "+relax"


@dataclass(frozen=True)
class PairedComparison:
    """``method − baseline`` over the molecules of one dataset, for one metric.

    Attributes:
        metric: ``"COV-R(1.0 Å)"`` (difference in fractions) or ``"AMR-R"`` (Å; lower is better).
        molecules: molecules in the comparison.
        mean, low, high: mean difference and its 95 % bootstrap interval.
        better, equal, worse: molecules where the method beats, ties, loses to the baseline.
    """

    dataset: str
    method: str
    baseline: str
    metric: str
    molecules: int
    mean: float
    low: float
    high: float
    better: int
    equal: int
    worse: int


def _bootstrap(diff: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    if len(diff) == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def compare(
    method: Mapping[str, EnsembleScore],
    baseline: Mapping[str, EnsembleScore],
    *,
    dataset: str,
    method_name: str,
    baseline_name: str,
    delta: float = 1.0,
    resamples: int = 10_000,
    seed: int = 0,
) -> list[PairedComparison]:
    """COV-R(``delta``) and AMR-R comparisons over the molecules both mappings hold (by name)."""
    names = sorted(set(method) & set(baseline))
    if not names:
        raise ValueError(f"{method_name} and {baseline_name} share no molecules on {dataset}")
    out = []
    cov = np.array([method[n].cov_r_at(delta) - baseline[n].cov_r_at(delta) for n in names])
    both = [n for n in names if not (method[n].failed or baseline[n].failed)]
    amr = np.array([method[n].amr_r - baseline[n].amr_r for n in both])
    for metric, diff, sign in ((f"COV-R({delta} Å)", cov, 1.0), ("AMR-R", amr, -1.0)):
        low, high = _bootstrap(diff, resamples, seed)
        gain = sign * diff
        out.append(
            PairedComparison(
                dataset=dataset,
                method=method_name,
                baseline=baseline_name,
                metric=metric,
                molecules=len(diff),
                mean=float(diff.mean()) if len(diff) else math.nan,
                low=low,
                high=high,
                better=int((gain > 1e-12).sum()),
                equal=int((np.abs(gain) <= 1e-12).sum()),
                worse=int((gain < -1e-12).sum()),
            )
        )
    return out


def scores_by_dataset(results: dict[str, Any]) -> dict[str, dict[str, dict[str, EnsembleScore]]]:
    """``{dataset: {method: {molecule: EnsembleScore}}}`` from one run's results."""
    thresholds = results["thresholds"]
    out: dict[str, dict[str, dict[str, EnsembleScore]]] = {}
    for ds in results["datasets"]:
        per_method = out.setdefault(ds["dataset"], {})
        for mol in ds["molecules"]:
            for name, rec in mol["methods"].items():
                per_method.setdefault(name, {})[mol["name"]] = record_score(rec, thresholds, mol["num_refs"])
    return out


def load_scores(paths: Sequence[Path]) -> dict[str, dict[str, dict[str, EnsembleScore]]]:
    """Several runs' JSON results merged; a method scored twice on one molecule must agree on ``L``."""
    merged: dict[str, dict[str, dict[str, EnsembleScore]]] = {}
    refs: dict[tuple[str, str], int] = {}
    for path in paths:
        try:
            results = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read benchmark results {path}: {exc}") from exc
        for dataset, methods in scores_by_dataset(results).items():
            for name, per_mol in methods.items():
                for mol, score in per_mol.items():
                    seen = refs.setdefault((dataset, mol), score.num_ref)
                    if seen != score.num_ref:
                        raise ValueError(
                            f"{path}: {dataset}/{mol} has {score.num_ref} references, another run had {seen}: "
                            "combine runs with the same --max-refs only"
                        )
                    merged.setdefault(dataset, {}).setdefault(name, {})[mol] = score
    return merged


def default_pairs(methods: Sequence[str]) -> list[tuple[str, str]]:
    """Every method that is not an RDKit baseline against every ``rdkit*`` method with the same relaxation
    (both ``…+relax`` or neither)."""
    baselines = [m for m in methods if m.startswith(BASELINE_PREFIX)]
    return [
        (m, b)
        for m in methods
        if not m.startswith(BASELINE_PREFIX)
        for b in baselines
        if m.endswith(RELAXED_SUFFIX) == b.endswith(RELAXED_SUFFIX)
    ]


def paired_lines(
    scores: Mapping[str, Mapping[str, Mapping[str, EnsembleScore]]],
    pairs: Sequence[tuple[str, str]],
    delta: float = 1.0,
) -> list[str]:
    """A markdown table of :func:`compare` over every dataset holding both methods of a pair."""
    rows = []
    for dataset, methods in scores.items():
        for method, baseline in pairs:
            if method in methods and baseline in methods:
                rows += compare(
                    methods[method],
                    methods[baseline],
                    dataset=dataset,
                    method_name=method,
                    baseline_name=baseline,
                    delta=delta,
                )
    if not rows:
        return []
    lines = [
        "| dataset | method − baseline | metric | molecules | mean difference [95 % CI] | better / equal / worse |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        scale, unit = (100.0, " points") if r.metric.startswith("COV") else (1.0, " Å")
        lines.append(
            f"| {r.dataset} | {r.method} − {r.baseline} | {r.metric} | {r.molecules} | "
            f"{scale * r.mean:+.2f}{unit} [{scale * r.low:+.2f}, {scale * r.high:+.2f}] | "
            f"{r.better} / {r.equal} / {r.worse} |"
        )
    return lines


def split_pair(pair: str, known: set[str]) -> tuple[str, str]:
    """``METHOD:BASELINE`` as two names; where names hold colons themselves (``knob:mmff200``), the one split whose
    two sides are both methods in ``known``."""
    cuts = [i for i, ch in enumerate(pair) if ch == ":"]
    if len(cuts) == 1:
        return pair[: cuts[0]], pair[cuts[0] + 1 :]
    fits = [(pair[:i], pair[i + 1 :]) for i in cuts if pair[:i] in known and pair[i + 1 :] in known]
    if len(fits) != 1:
        raise ValueError(f"pairs are METHOD:BASELINE of methods in the results, got {pair!r}")
    return fits[0]


def run_from_args(args: argparse.Namespace, command: str) -> list[str]:
    scores = load_scores(args.results)
    if args.pairs is None:
        methods = sorted({m for per_method in scores.values() for m in per_method})
        pairs = default_pairs(methods)
    else:
        known = {m for per_method in scores.values() for m in per_method}
        pairs = [split_pair(p, known) for p in args.pairs]
    lines = paired_lines(scores, pairs, delta=args.delta)  # a --delta off the grid is a ValueError
    if not lines:
        raise ValueError(f"no dataset holds both methods of any pair {pairs} in {[str(p) for p in args.results]}")
    lines = [f"Reproduce: `{command}`", "", *lines]
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines
