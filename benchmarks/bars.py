"""The torsional model's bars (issue 18, "Done when"), checked on full ``bench conformers`` runs.

Per run (one dataset, one sampling seed, every method scored in the same run), the product's pipeline
(``torsional+select`` unless told otherwise) against:

- ETKDG + MMFF94 (``rdkit+mmff``): COV-R@1.0 at least ``recall_gain`` (10 points) higher, the paired 95 %
  bootstrap interval over molecules (:func:`benchmarks.paired.compare`) above zero, and AMR-R at least ``amr_gain``
  (0.10 Å) lower, means over molecules; and precision: COV-P@1.0 no lower, AMR-P no higher;
- each random-torsion control in the run (``torsion-control+mmff``: relaxed by 200 Cartesian MMFF94 iterations;
  ``torsion-control+tfr``: relaxed as the product relaxes): COV-R@1.0 at least ``control_gain`` (3 points) higher
  with the paired interval above zero;
- CONFORGE (``conforge``): COV-R@1.0 higher and AMR-R lower;
- speed, on ``drugs_dev`` only (as the issue states it): conformers per core-second at least ETKDG + MMFF94's in
  the same run (both single-threaded; the ratio is what the shared machine cannot disturb).

Each bar is reported with its measured value, what it needs and the margin (positive: met by that much;
negative: short by that much), so a run's standing is one table and one command, not a hand-made summary:

    python -m benchmarks.bars benchmarks/results/conformers_tfr_full_drugs.json \\
        benchmarks/results/conformers_tfr_full_spice.json --out benchmarks/results/bars.md

A bar whose methods are not in a run is left out of that run's rows.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.coverage import EnsembleScore, SummaryScore
from benchmarks.paired import compare, scores_by_dataset
from benchmarks.report import conformers_per_second, summaries

__all__ = ["BarCheck", "Bars", "check_bars", "main", "markdown", "matrix"]

log = logging.getLogger(__name__)

DELTA = 1.0  # Å: the COV threshold


@dataclass(frozen=True, kw_only=True)
class Bars:
    """The issue's thresholds and the method names they compare.

    Attributes:
        product: the pipeline under test.
        baseline: ETKDG + MMFF94.
        controls: random-torsion controls (each one a bar of its own where the run has it).
        conforge: CONFORGE.
        recall_gain, control_gain: COV-R@1.0 margins over the baseline and the controls (fractions).
        amr_gain: AMR-R margin over the baseline (Å).
        speed_datasets: datasets where the speed bar applies.
    """

    product: str = "torsional+select"
    baseline: str = "rdkit+mmff"
    controls: tuple[str, ...] = ("torsion-control+mmff", "torsion-control+tfr")
    conforge: str = "conforge"
    recall_gain: float = 0.10
    control_gain: float = 0.03
    amr_gain: float = 0.10
    speed_datasets: tuple[str, ...] = ("drugs_dev",)


@dataclass(frozen=True)
class BarCheck:
    """One bar on one run.

    Attributes:
        run: the run's tag (or file stem); ``dataset`` and ``seed`` its sampling seed.
        bar: what is compared (``"COV-R@1.0 − rdkit+mmff"``).
        measured: the product's value or difference; ``needed``: the threshold in the same unit.
        margin: by how much it is met (>= 0) or short (< 0), in that unit, lower-is-better bars included.
        unit: ``"points"``, ``"Å"`` or ``"×"``; ``interval``: the paired 95 % interval where the bar has one.
    """

    run: str
    dataset: str
    seed: int | None
    bar: str
    measured: float
    needed: float
    margin: float
    unit: str
    interval: tuple[float, float] | None = None

    @property
    def met(self) -> bool:
        return self.margin >= 0


def _paired_recall(
    scores: Mapping[str, Mapping[str, EnsembleScore]], product: str, other: str, dataset: str
) -> tuple[float, float, float]:
    cov = compare(scores[product], scores[other], dataset=dataset, method_name=product, baseline_name=other)[0]
    return cov.mean, cov.low, cov.high


def check_bars(results: Mapping[str, Any], bars: Bars = Bars(), run: str | None = None) -> list[BarCheck]:
    """Every bar of ``bars`` that ``results`` (one ``bench conformers`` run) holds the methods for.

    Raises:
        ValueError: the run lacks the product or the baseline on a dataset.
    """
    config = results.get("config", {})
    name = run or str(config.get("tag") or "run")
    seed = config.get("seed")
    summ = summaries(dict(results))
    scores = scores_by_dataset(dict(results))
    out: list[BarCheck] = []
    for ds in results["datasets"]:
        dataset = ds["dataset"]
        s: dict[str, SummaryScore] = summ[dataset]
        missing = [m for m in (bars.product, bars.baseline) if m not in s]
        if missing:
            raise ValueError(f"{name}: {dataset} has no {' or '.join(missing)}: the bars need both")
        p, b = s[bars.product], s[bars.baseline]

        row = functools.partial(BarCheck, name, dataset, seed)
        gain, low, high = _paired_recall(scores[dataset], bars.product, bars.baseline, dataset)
        # met only when the mean clears the margin and the paired interval excludes zero: the smaller of the two
        out.append(
            row(
                f"COV-R@1.0 − {bars.baseline}",
                100 * gain,
                100 * bars.recall_gain,
                100 * min(gain - bars.recall_gain, low),
                "points",
                interval=(100 * low, 100 * high),
            )
        )
        amr = p.amr_r_mean - b.amr_r_mean
        out.append(row(f"AMR-R − {bars.baseline}", amr, -bars.amr_gain, -bars.amr_gain - amr, "Å"))
        for control in bars.controls:
            if control not in s:
                continue
            gain, low, high = _paired_recall(scores[dataset], bars.product, control, dataset)
            # met only when the mean clears the margin and the interval excludes zero: the smaller of the two
            margin = min(gain - bars.control_gain, low)
            out.append(
                row(
                    f"COV-R@1.0 − {control}",
                    100 * gain,
                    100 * bars.control_gain,
                    100 * margin,
                    "points",
                    interval=(100 * low, 100 * high),
                )
            )
        if bars.conforge in s:
            c = s[bars.conforge]
            diff = p.at("cov_r_mean", DELTA) - c.at("cov_r_mean", DELTA)
            out.append(row(f"COV-R@1.0 − {bars.conforge}", 100 * diff, 0.0, 100 * diff, "points"))
            amr = p.amr_r_mean - c.amr_r_mean
            out.append(row(f"AMR-R − {bars.conforge}", amr, 0.0, -amr, "Å"))
        prec = p.at("cov_p_mean", DELTA) - b.at("cov_p_mean", DELTA)
        out.append(row(f"COV-P@1.0 − {bars.baseline}", 100 * prec, 0.0, 100 * prec, "points"))
        amr_p = p.amr_p_mean - b.amr_p_mean
        out.append(row(f"AMR-P − {bars.baseline}", amr_p, 0.0, -amr_p, "Å"))
        if dataset in bars.speed_datasets:
            ratio = conformers_per_second(ds, bars.product) / conformers_per_second(ds, bars.baseline)
            out.append(row(f"conformers/s ÷ {bars.baseline}", ratio, 1.0, ratio - 1.0, "×"))
    return out


def _value(check: BarCheck) -> str:
    if check.unit == "points":
        text = f"{check.measured:+.1f}"
        if check.interval is not None:
            text += f" [{check.interval[0]:+.1f}, {check.interval[1]:+.1f}]"
        return text
    if check.unit == "Å":
        return f"{_angstrom(check.measured)} Å"
    return f"{check.measured:.2f}×"


def _needed(check: BarCheck) -> str:
    if check.unit == "points":
        return f"≥ {check.needed:+.1f}" + (" and > 0" if check.interval is not None and check.needed > 0 else "")
    if check.unit == "Å":
        return f"≤ {check.needed:+.2f} Å"
    return f"≥ {check.needed:.2f}×"


def _angstrom(x: float) -> str:
    """Three decimals, or two significant digits where that would print a tie as zero."""
    return f"{x:+.3f}" if x == 0 or abs(x) >= 5e-4 else f"{x:+.1e}"


def _margin(check: BarCheck) -> str:
    word = "met" if check.met else "**short**"
    if check.unit == "Å":
        return f"{word} ({_angstrom(check.margin)} Å)"
    return f"{word} ({check.margin:+.2f}×)" if check.unit == "×" else f"{word} ({check.margin:+.1f} pt)"


def matrix(checks: Sequence[BarCheck]) -> list[str]:
    """The standing in one table: a row per bar, a column per run (dataset, seed), each cell met or short by its
    margin; ``·`` where the run lacks the bar's methods."""
    columns = list(dict.fromkeys((c.run, c.dataset, c.seed) for c in checks))
    rows = list(dict.fromkeys(c.bar for c in checks))
    cells = {(c.bar, (c.run, c.dataset, c.seed)): _margin(c) for c in checks}
    head = [f"{dataset} seed {'–' if seed is None else seed}" for _, dataset, seed in columns]
    lines = ["| bar | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for bar in rows:
        lines.append(f"| {bar} | " + " | ".join(cells.get((bar, col), "·") for col in columns) + " |")
    return lines


def markdown(checks: Sequence[BarCheck]) -> list[str]:
    """One table (a row per bar and run) and a count of the bars met per run."""
    lines = [
        "| run | dataset | seed | bar | measured [paired 95 % CI] | needed | standing |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in checks:
        seed = "–" if c.seed is None else str(c.seed)
        lines.append(f"| {c.run} | {c.dataset} | {seed} | {c.bar} | {_value(c)} | {_needed(c)} | {_margin(c)} |")
    lines.append("")
    runs: dict[tuple[str, str], list[BarCheck]] = {}
    for c in checks:
        runs.setdefault((c.run, c.dataset), []).append(c)
    for (run, dataset), group in runs.items():
        short = [c.bar for c in group if not c.met]
        lines.append(
            f"- {run} ({dataset}): {sum(c.met for c in group)} of {len(group)} bars met"
            + (f"; short: {'; '.join(short)}" if short else "")
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bars", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="bench conformers JSON results, one run each")
    parser.add_argument("--product", default=Bars.product, help="the pipeline under test (default %(default)s)")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    bars = Bars(product=args.product)
    checks: list[BarCheck] = []
    for path in args.results:
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            parser.error(f"cannot read benchmark results {path}: {exc}")
        try:
            checks += check_bars(results, bars, run=results.get("config", {}).get("tag") or path.stem)
        except ValueError as exc:
            parser.error(str(exc))
    command = "python -m benchmarks.bars " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    text = "\n".join(
        ["# The torsional model's bars (issue 18)", "", f"`{command}`", "", *matrix(checks), "", *markdown(checks), ""]
    )
    sys.stdout.write(text)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
        log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
