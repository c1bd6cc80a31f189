"""What any pipeline that ends in an MMFF94 relaxation can reach, and how compact the reference ensembles are.

Two measurements per molecule of a benchmark set, both independent of any sampler's luck:

- **The MMFF94 ceiling.** Every reference conformer is itself relaxed by RDKit's MMFF94 (at most ``max_iters``
  iterations, as the product and the baselines relax theirs), and the relaxed copies are scored against the
  references (K = L, COV-R and COV-P at 1.0 Å). A pipeline whose last step is that relaxation and which had drawn
  a start in every reference conformer's basin would score about this; the share of references whose own relaxed
  copy stays within 1 Å says how far MMFF94's minima sit from the reference method's (GFN2-xTB for GEOM-DRUGS,
  DFT for SPICE).
- **Compactness.** The heavy-atom radius of gyration of the references against that of each method's conformers
  (``min(2L, max_gen)`` per molecule, the benchmark's own generator and relaxation): a method that proposes
  extended conformers where the references are folded misses them, whatever its torsion preferences.

Evaluation only, nothing here is tuned: the ceiling may be measured on any set; the compactness comparison
defaults to ``drugs_dev``.

Reproduce: ``python -m benchmarks.ensemble_limits --datasets drugs_dev spice_test --compactness drugs_dev``
(writes ``benchmarks/results/ensemble_limits.{md,json,png}``; ``--tag T``: ``ensemble_limits_T.*``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rdkit import Chem

from benchmarks.coverage import score_matrix
from benchmarks.methods import GenerationError, Method, MethodSettings, build_methods
from energy.mmff import mmff_optimize
from molecules.references import ReferenceEnsemble, load_references
from molecules.rmsd import HeavyAtomRmsd, conformer_coordinates

__all__ = ["Ceiling", "heavy_radius_of_gyration", "mmff_ceiling"]

log = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parent.parent
DEFAULT_METHODS = ("rdkit+mmff", "torsion-control+isomers+mmff", "torsional+mmff")


@dataclass(frozen=True)
class Ceiling:
    """One molecule's references relaxed by MMFF94 and scored against themselves (K = L), at 1.0 Å.

    Attributes:
        cov_r, cov_p: fractions.
        own_within: share of references whose own relaxed copy lies within 1.0 Å of them.
        median_own_rmsd: median RMSD (Å) between a reference and its own relaxed copy.
    """

    cov_r: float
    cov_p: float
    own_within: float
    median_own_rmsd: float


def mmff_ceiling(mol: Chem.Mol, max_iters: int = 200, engine: HeavyAtomRmsd | None = None) -> Ceiling:
    """:class:`Ceiling` of ``mol``'s conformers (the references, all atoms, explicit hydrogens).

    Raises:
        ValueError: ``mol`` has no conformer, or atoms MMFF94 cannot type.
    """
    if mol.GetNumConformers() == 0:
        raise ValueError("the MMFF94 ceiling needs reference conformers")
    ref = conformer_coordinates(mol)
    relaxed = Chem.Mol(mol)
    mmff_optimize(relaxed, max_iters=max_iters)
    engine = engine or HeavyAtomRmsd(mol)
    d = engine.matrix(ref, conformer_coordinates(relaxed))
    s = score_matrix(d)
    own = np.diag(d)
    return Ceiling(s.cov_r_at(1.0), s.cov_p_at(1.0), float((own < 1.0).mean()), float(np.median(own)))


def heavy_radius_of_gyration(mol: Chem.Mol, coords: np.ndarray) -> np.ndarray:
    """``[C]`` radius of gyration (Å, unweighted) of the heavy atoms of each conformer ``coords [C, n, 3]``."""
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 3 or coords.shape[1:] != (mol.GetNumAtoms(), 3):
        raise ValueError(f"coordinates must be [C, {mol.GetNumAtoms()}, 3], got {coords.shape}")
    heavy = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() > 1]
    x = coords[:, heavy]
    centred = x - x.mean(axis=1, keepdims=True)
    return np.sqrt((centred**2).sum(axis=-1).mean(axis=1))


def _method_conformers(method: Method, mol: Chem.Mol, count: int, seed: int) -> np.ndarray:
    out = method.generator.generate(mol, count, seed)
    if method.refiner is not None:
        out = method.refiner.refine(out).mol
    return conformer_coordinates(out)


def measure_ceiling(ensembles: Sequence[ReferenceEnsemble], max_iters: int) -> list[dict[str, Any]]:
    rows = []
    for ens in ensembles:
        try:
            c = mmff_ceiling(ens.mol, max_iters)
        except ValueError as exc:
            log.warning("%s: no ceiling (%s)", ens.name, exc)
            continue
        rows.append({"molecule": ens.name, "num_references": ens.num_conformers, **asdict(c)})
        log.info("%s L=%d ceiling COV-R %.2f COV-P %.2f", ens.name, ens.num_conformers, c.cov_r, c.cov_p)
    return rows


def measure_compactness(
    ensembles: Sequence[ReferenceEnsemble], methods: Sequence[Method], max_gen: int, seed: int
) -> list[dict[str, Any]]:
    rows = []
    for ens in ensembles:
        row: dict[str, Any] = {
            "molecule": ens.name,
            "num_references": ens.num_conformers,
            "references": float(heavy_radius_of_gyration(ens.mol, conformer_coordinates(ens.mol)).mean()),
        }
        count = min(2 * ens.num_conformers, max_gen)
        for m in methods:
            try:
                x = _method_conformers(m, ens.mol, count, seed)
                row[m.name] = float(heavy_radius_of_gyration(ens.mol, x).mean()) if len(x) else float("nan")
            except GenerationError as exc:
                log.warning("%s %s: %s", ens.name, m.name, exc)
                row[m.name] = float("nan")
        rows.append(row)
        log.info("%s Rg: %s", ens.name, {k: round(v, 2) for k, v in row.items() if isinstance(v, float)})
    return rows


def _plot(compactness: dict[str, list[dict[str, Any]]], methods: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(compactness)
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 5), squeeze=False)
    for ax, name in zip(axes[0], sets, strict=True):
        rows = compactness[name]
        ref = np.array([r["references"] for r in rows])
        for m in methods:
            y = np.array([r[m] for r in rows])
            ax.scatter(ref, y - ref, s=14, label=f"{m} (mean {np.nanmean(y - ref):+.2f} Å)")
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xlabel("references: mean heavy-atom radius of gyration (Å)")
        ax.set_ylabel("method minus references (Å)")
        ax.set_title(f"{name}: above 0, more extended than the references")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(results: dict[str, Any], out_dir: Path, tag: str = "") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"ensemble_limits_{tag}" if tag else "ensemble_limits"
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
    paths[0].write_text(json.dumps(results, indent=1))
    lines = ["# What MMFF94-relaxed pipelines can reach, and how compact the references are", ""]
    lines += [f"Reproduce: `{results['command']}`", ""]
    lines += [
        f"MMFF94 ceiling: every reference conformer relaxed by MMFF94 (maxIters {results['max_iters']}) and scored "
        "against the references, K = L, at 1.0 Å; mean over molecules.",
        "",
        "| dataset | molecules | COV-R | COV-P | references within 1 Å of their own relaxed copy | median own RMSD |",
        "|---|---|---|---|---|---|",
    ]
    for name, rows in results["ceiling"].items():
        col = {k: np.mean([r[k] for r in rows]) for k in ("cov_r", "cov_p", "own_within", "median_own_rmsd")}
        lines.append(
            f"| {name} | {len(rows)} | {100 * col['cov_r']:.1f} | {100 * col['cov_p']:.1f} | "
            f"{100 * col['own_within']:.1f} % | {col['median_own_rmsd']:.2f} Å |"
        )
    for name, rows in results["compactness"].items():
        methods = [k for k in rows[0] if k not in ("molecule", "num_references", "references")]
        ref = np.array([r["references"] for r in rows])
        lines += [
            "",
            f"Compactness on {name}: heavy-atom radius of gyration, mean over conformers then molecules "
            f"(min(2L, {results['max_gen']}) conformers per method, seed {results['seed']}).",
            "",
            "| ensemble | mean Rg (Å) | minus references (Å) | molecules more extended than the references |",
            "|---|---|---|---|",
            f"| references | {ref.mean():.2f} | | |",
        ]
        for m in methods:
            y = np.array([r[m] for r in rows])
            lines.append(
                f"| {m} | {np.nanmean(y):.2f} | {np.nanmean(y - ref):+.2f} | {int((y > ref).sum())} / {len(rows)} |"
            )
    paths[1].write_text("\n".join(lines) + "\n")
    if results["compactness"]:
        first = next(iter(results["compactness"].values()))
        methods = [k for k in first[0] if k not in ("molecule", "num_references", "references")]
        paths.append(out_dir / f"{stem}.png")
        _plot(results["compactness"], methods, paths[-1])
    return paths


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--datasets", nargs="*", default=["drugs_dev"], help="sets whose MMFF94 ceiling is measured")
    p.add_argument("--compactness", nargs="*", default=["drugs_dev"], help="sets whose compactness is compared")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    p.add_argument("--checkpoint", type=Path, default=_REPO / "checkpoints" / "torsional.pt")
    p.add_argument("--max-iters", type=int, default=200, help="MMFF94 iteration cap of the ceiling")
    p.add_argument("--max-gen", type=int, default=128, help="conformers per molecule and method, at most")
    p.add_argument("--max-refs", type=int, default=512)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--tag", default="", help="results go to ensemble_limits_<tag>.* (default: ensemble_limits.*)")
    p.add_argument("--data-dir", type=Path, default=_REPO.parent / "shared" / "data")
    p.add_argument("--out-dir", type=Path, default=_REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    command = "python -m benchmarks.ensemble_limits " + shlex.join(sys.argv[1:] if argv is None else argv)
    methods = build_methods(args.methods, MethodSettings(threads=1, torsional_checkpoint=str(args.checkpoint)))
    names = {*args.datasets, *args.compactness}
    refs = {name: load_references(name, args.data_dir, max_refs=args.max_refs) for name in names}
    results: dict[str, Any] = {
        "command": command,
        "max_iters": args.max_iters,
        "max_gen": args.max_gen,
        "seed": args.seed,
        "ceiling": {name: measure_ceiling(refs[name].ensembles, args.max_iters) for name in args.datasets},
        "compactness": {
            name: measure_compactness(refs[name].ensembles, methods, args.max_gen, args.seed)
            for name in args.compactness
        },
    }
    paths = write(results, args.out_dir, args.tag)
    log.info("wrote %s; reproduce: %s", ", ".join(str(x) for x in paths), command)


if __name__ == "__main__":
    main()
