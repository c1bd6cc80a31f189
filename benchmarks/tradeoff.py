"""Recall against precision: where each method of one or more conformer-benchmark runs sits, and the region the
torsional model's "Done when" asks for (recall at least the random-torsion control's + 3 points, precision at least
ETKDG + MMFF94's).

A table gives the numbers; this picture shows the trade-off the numbers hide: a method that is broad (the control)
or precise (ETKDG + MMFF94) is easy; the learned sampler must sit up and to the right of both.

Reproduce: ``python -m benchmarks.tradeoff benchmarks/results/conformers_torsional_stereo_full_drugs.json
benchmarks/results/conformers_torsional_stereo_full_spice.json --out benchmarks/results/precision_recall.png``
(further runs of the same dataset, e.g. ``benchmarks/torsional_knobs.py``'s, add their methods to its panel).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.report import summaries

__all__ = ["BarRegion", "Point", "bar_region", "main", "plot_tradeoff", "tradeoff_points"]

log = logging.getLogger(__name__)

PRECISION_REFERENCE = "rdkit+mmff"
RECALL_REFERENCE = "torsion-control+mmff"
RECALL_MARGIN = 3.0  # points of COV-R@1.0 above the control (issue 18)


@dataclass(frozen=True)
class Point:
    """One method of one run on one dataset: COV-R and COV-P at ``delta`` (%), mean over molecules."""

    method: str
    run: str
    recall: float
    precision: float


@dataclass(frozen=True)
class BarRegion:
    """Recall at least ``min_recall`` and precision at least ``min_precision`` (%)."""

    min_recall: float
    min_precision: float

    def contains(self, point: Point) -> bool:
        return point.recall >= self.min_recall and point.precision >= self.min_precision


def tradeoff_points(runs: Sequence[Mapping[str, Any]], delta: float = 1.0) -> dict[str, list[Point]]:
    """``{dataset: [Point, ...]}`` over every method of every run (results as ``bench conformers`` writes them)."""
    out: dict[str, list[Point]] = {}
    for results in runs:
        run = str(results["config"].get("tag", "?"))
        for dataset, per_method in summaries(dict(results)).items():
            for name, s in per_method.items():
                point = Point(name, run, 100 * s.at("cov_r_mean", delta), 100 * s.at("cov_p_mean", delta))
                out.setdefault(dataset, []).append(point)
    return out


def bar_region(
    points: Sequence[Point],
    *,
    precision_reference: str = PRECISION_REFERENCE,
    recall_reference: str = RECALL_REFERENCE,
    recall_margin: float = RECALL_MARGIN,
) -> BarRegion:
    """The region from the references' first appearance in ``points``; ``ValueError`` names a missing one."""
    by_name: dict[str, Point] = {}
    for p in points:
        by_name.setdefault(p.method, p)
    missing = [m for m in (precision_reference, recall_reference) if m not in by_name]
    if missing:
        raise ValueError(f"the runs have no {' or '.join(missing)} row: the bar needs both references")
    return BarRegion(by_name[recall_reference].recall + recall_margin, by_name[precision_reference].precision)


def _short(method: str) -> str:
    """``knob:ckpt:runs/x/snap_r80.pt`` -> ``x/snap_r80``: the variant's own name."""
    name = method.removeprefix("knob:").removeprefix("ckpt:")
    return name.removeprefix("runs/").removesuffix(".pt")


def plot_tradeoff(points: Mapping[str, Sequence[Point]], out: Path, title: str = "") -> Path:
    """One panel per dataset: each method a dot (labelled), the bar region shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(points)
    listed = max(sum(1 for p in pts if p.run != pts[0].run) for pts in points.values())  # key lines per panel
    height = max(5.2, 0.11 * listed + 1.2)  # 6-pt key lines, about 0.1 inch each, all inside the figure
    fig, axes = plt.subplots(1, len(datasets), figsize=(8.4 * len(datasets), height), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        pts = points[dataset]
        xs = [p.recall for p in pts]
        ys = [p.precision for p in pts]
        try:
            region = bar_region(pts)
        except ValueError:
            region = None
        lo_x, hi_x = min(xs) - 4, max(xs + ([region.min_recall] if region else [])) + 4
        lo_y, hi_y = min(ys) - 4, max(ys + ([region.min_precision] if region else [])) + 4
        if region is not None:
            ax.fill_between(
                [region.min_recall, hi_x],
                region.min_precision,
                hi_y,
                color="C2",
                alpha=0.15,
                label="the bar: recall ≥ control + 3, precision ≥ ETKDG + MMFF94",
            )
        key: list[str] = []  # points of the further runs are numbered, their names listed beside the panel
        for p in pts:
            color = "C0" if region is None or not region.contains(p) else "C2"
            if p.run == pts[0].run:
                ax.plot(p.recall, p.precision, "o", color=color)
                ax.annotate(p.method, (p.recall, p.precision), fontsize=7, xytext=(4, 3), textcoords="offset points")
                continue
            key.append(f"{len(key) + 1}: {_short(p.method)} ({p.run})")
            ax.plot(p.recall, p.precision, "s", color="C1" if color == "C0" else color, ms=4)
            ax.annotate(str(len(key)), (p.recall, p.precision), fontsize=6, xytext=(3, 2), textcoords="offset points")
        if key:
            ax.text(1.02, 1.0, "\n".join(key), transform=ax.transAxes, fontsize=6, va="top", family="monospace")
        ax.set_xlim(lo_x, hi_x)
        ax.set_ylim(lo_y, hi_y)
        ax.set_xlabel("COV-R@1.0 Å, recall (%)")
        ax.set_ylabel("COV-P@1.0 Å, precision (%)")
        ax.set_title(dataset)
        ax.grid(alpha=0.3)
        if region is not None:
            ax.legend(fontsize=8, loc="lower left")
    if title:
        fig.suptitle(textwrap.fill(title, 110), fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("results", nargs="+", type=Path, help="JSON files written by bench conformers (or its scripts)")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.add_argument("--delta", type=float, default=1.0, help="RMSD threshold (Å)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runs = []
    for path in args.results:
        try:
            runs.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise SystemExit(f"{path}: not a readable benchmark result ({exc})") from exc
    points = tradeoff_points(runs, args.delta)
    command = "python -m benchmarks.tradeoff " + shlex.join(sys.argv[1:] if argv is None else argv)
    tags = sorted({p.run for pts in points.values() for p in pts})
    plot_tradeoff(points, args.out, title=f"COV-R vs COV-P at {args.delta} Å; runs: {', '.join(tags)}")
    for dataset, pts in points.items():
        for pt in pts:
            log.info(
                "%-10s %-40s COV-R %5.1f  COV-P %5.1f", dataset, f"{pt.method} ({pt.run})", pt.recall, pt.precision
            )
    log.info("wrote %s; reproduce: %s", args.out, command)


if __name__ == "__main__":
    main()
