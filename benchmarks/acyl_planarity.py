"""How far from planar the torsional model draws acyl bonds, before and after the MMFF94 relaxation.

An acyl bond (amide, urea, carbamate, ester, acid: :func:`molecules.acyl_isomers.is_acyl_torsion`) is planar in
every reference ensemble. For each molecule of the named datasets with acyl torsions: ``K`` draws of the shipped
model (the default pipeline's acyl-isomer rule, which keeps the network's deviation from planarity on the drawn
isomer, or with ``acyl_planar``, which sets the planar angle), and the same draws relaxed by RDKit MMFF94 (200
iterations, as the product); per molecule, the share of acyl dihedrals more than 20 and 45 degrees from planar,
and for the references the share more than 20 degrees. No model is trained here: evaluation data are only measured.

Reproduce: ``python -m benchmarks.acyl_planarity`` (writes ``benchmarks/results/acyl_planarity.md``).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

import numpy as np
import torch
from rdkit import Chem

from energy.mmff import mmff_optimize
from inference.torsional_sampling import TorsionalSampler
from molecules.acyl_isomers import is_acyl_torsion
from molecules.diversity import dihedrals
from molecules.references import load_references
from molecules.rmsd import conformer_coordinates
from molecules.structures import with_conformers
from molecules.torsions import TorsionRules, find_torsions

log = logging.getLogger(__name__)
_REPO = Path(__file__).resolve().parent.parent


def off_planar(positions: np.ndarray, atoms: np.ndarray) -> np.ndarray:
    """Degrees from the nearer planar angle (0 or 180) of each dihedral ``atoms [T, 4]`` in ``positions [N, n, 3]``."""
    d = np.abs(np.degrees(dihedrals(positions, atoms)))
    return np.minimum(d, 180.0 - d)


def measure(sampler: TorsionalSampler, mol: Chem.Mol, draws: int, seed: int) -> dict[str, float]:
    """Shares of acyl dihedrals off planar for one reference ensemble ``mol`` (explicit hydrogens, its conformers
    the references); empty where it has no acyl torsion."""
    reference = conformer_coordinates(mol)
    acyl = [t.atoms for t in find_torsions(mol, TorsionRules()) if is_acyl_torsion(mol, t)]
    if not acyl:
        return {}
    atoms = np.array(acyl)
    raw = sampler.sample_positions(mol, draws, seed=seed)
    relaxed = with_conformers(mol, raw)
    mmff_optimize(relaxed, max_iters=200)
    drawn, after, ref = (off_planar(x, atoms) for x in (raw, conformer_coordinates(relaxed), reference))
    return {
        "drawn>20": float((drawn > 20).mean()),
        "drawn>45": float((drawn > 45).mean()),
        "relaxed>20": float((after > 20).mean()),
        "reference>20": float((ref > 20).mean()),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--datasets", nargs="+", default=["drugs_dev", "spice_test"])
    p.add_argument("--checkpoint", type=Path, default=_REPO / "checkpoints" / "torsional.pt")
    p.add_argument("--draws", type=int, default=64)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--planar", action="store_true", help="acyl torsions at their isomer's planar angle")
    p.add_argument("--data-dir", type=Path, default=_REPO.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=_REPO / "benchmarks" / "results" / "acyl_planarity.md")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    command = ("python -m benchmarks.acyl_planarity " + shlex.join(sys.argv[1:] if argv is None else argv)).strip()
    sampler = TorsionalSampler(args.checkpoint, acyl_planar=args.planar)
    keys = ("drawn>20", "drawn>45", "relaxed>20", "reference>20")
    lines = [
        "# Acyl torsions off planar: the model's draws, after MMFF94, the references",
        "",
        f"Reproduce: `{command}`",
        "",
        f"{args.draws} draws per molecule (seed {args.seed}, acyl_planar={args.planar}); shares of acyl dihedrals "
        "more than 20 / 45 degrees from planar.",
        "",
        "| dataset | molecule | acyl torsions | " + " | ".join(keys) + " |",
        "|---|---|---|" + "---|" * len(keys),
    ]
    for dataset in args.datasets:
        refs = load_references(dataset, args.data_dir, max_refs=8)
        rows = []
        for ens in refs.ensembles:
            shares = measure(sampler, ens.mol, args.draws, args.seed)
            if not shares:
                continue
            rows.append([shares[k] for k in keys])
            count = sum(is_acyl_torsion(ens.mol, t) for t in find_torsions(ens.mol, TorsionRules()))
            lines.append(f"| {dataset} | {ens.name} | {count} | " + " | ".join(f"{shares[k]:.2f}" for k in keys) + " |")
            log.info("%s %s %s", dataset, ens.name, shares)
        table = np.array(rows)
        lines.append(
            f"| {dataset} | **{len(rows)} molecules: min–max** | | "
            + " | ".join(f"{table[:, j].min():.2f}–{table[:, j].max():.2f}" for j in range(len(keys)))
            + " |"
        )
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log.info("wrote %s; reproduce: %s", args.out, command)


if __name__ == "__main__":
    main()
