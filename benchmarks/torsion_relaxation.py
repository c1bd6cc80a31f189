"""Torsion-first relaxation against RDKit's Cartesian MMFF94 minimizer, on the shipped model's draws.

For ``--molecules`` spice_train molecules with 6–9 rotatable bonds (training molecules: this measures a relaxation,
not coverage), ``--draws`` conformers each from the shipped torsional model are relaxed four ways, one thread:
RDKit's Cartesian minimizer for 200 iterations (the baselines' and the fast pipeline's relaxation) and for 2,000
(a near-converged reference), and :func:`molecules.torsion_relaxation.torsion_first_relax` with 30 and 60 polish
iterations (relaxed selection's default is 30). Reported per molecule: milliseconds per conformer, the median
MMFF94 energy above the 2,000-iteration end (kcal/mol), and the share of draws whose every torsion lies within
0.3 rad of where the 2,000 iterations end (how far the torsions still had to turn).

Reproduce: ``python -m benchmarks.torsion_relaxation`` (writes ``benchmarks/results/torsion_relaxation.md``).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rdkit import Chem

__all__ = ["main"]

log = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parent.parent
Relax = Callable[[Chem.Mol, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _settled(mol: Chem.Mol, x: np.ndarray, reference: np.ndarray) -> float:
    """Share of conformers whose every torsion-fingerprint entry is within 0.3 rad of the reference's."""
    from molecules.diversity import torsion_fingerprints

    a, b = torsion_fingerprints(mol, x), torsion_fingerprints(mol, reference)
    if a.shape[1] == 0:
        return 1.0
    gap = np.abs((a - b + np.pi) % (2 * np.pi) - np.pi).max(axis=1)
    return float((gap < 0.3).mean())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--molecules", type=int, default=6)
    p.add_argument("--draws", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", type=Path, default=_REPO / "checkpoints" / "torsional.pt")
    p.add_argument("--data-dir", type=Path, default=_REPO.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=_REPO / "benchmarks" / "results" / "torsion_relaxation.md")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    from energy.mmff import mmff_optimize
    from inference.torsional_sampling import TorsionalSampler
    from molecules.rmsd import conformer_coordinates
    from molecules.smiles import mol_from_smiles
    from molecules.structures import with_conformers
    from molecules.torsion_relaxation import TorsionRelaxation, torsion_first_relax

    rows = [line.split() for line in (args.data_dir / "spice" / "spice_train.txt").read_text().splitlines()[1:]]
    pool = [r[1] for r in rows if len(r) >= 2 and r[0] in {"6", "7", "8", "9"}]
    rng = np.random.default_rng(args.seed)
    smiles = [pool[i] for i in rng.choice(len(pool), args.molecules, replace=False)]
    sampler = TorsionalSampler(args.checkpoint)

    def cartesian(iters: int) -> Relax:
        def relax(mol: Chem.Mol, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            m = with_conformers(mol, x)
            energies = np.array([e for _, e in mmff_optimize(m, max_iters=iters)])
            return conformer_coordinates(m), energies

        return relax

    ways: dict[str, Relax] = {
        "Cartesian 200": cartesian(200),
        "torsions + 30": lambda m, x: torsion_first_relax(m, x, TorsionRelaxation(polish_iters=30)),
        "torsions + 60": lambda m, x: torsion_first_relax(m, x, TorsionRelaxation(polish_iters=60)),
    }
    command = ("python -m benchmarks.torsion_relaxation " + shlex.join(sys.argv[1:] if argv is None else argv)).strip()
    lines = [
        "# Torsion-first relaxation against RDKit's Cartesian MMFF94 minimizer",
        "",
        f"Reproduce: `{command}`",
        "",
        f"{args.draws} draws of the shipped model ({args.checkpoint.name}) per molecule, one thread. Per way: ms per "
        "conformer | median MMFF94 energy above the 2,000-iteration end (kcal/mol) | share of draws with every "
        "torsion within 0.3 rad of that end.",
        "",
        "| molecule | atoms | " + " | ".join(ways) + " | Cartesian 2000 (ms) |",
        "|---|---|" + "---|" * (len(ways) + 1),
    ]
    for smi in smiles:
        mol = mol_from_smiles(smi)
        draws = sampler.sample_positions(mol, args.draws, seed=args.seed)
        t0 = time.perf_counter()
        reference, e_ref = cartesian(2000)(mol, draws)
        t_ref = (time.perf_counter() - t0) / len(draws) * 1e3
        cells = []
        for name, relax in ways.items():
            t0 = time.perf_counter()
            x, energies = relax(mol, draws)
            ms = (time.perf_counter() - t0) / len(draws) * 1e3
            cells.append(f"{ms:.1f} \\| {np.median(energies - e_ref):.2f} \\| {_settled(mol, x, reference):.2f}")
            log.info("%s %s: %s", smi, name, cells[-1].replace("\\", ""))
        lines.append(f"| `{smi}` | {mol.GetNumAtoms()} | " + " | ".join(cells) + f" | {t_ref:.1f} |")
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log.info("wrote %s; reproduce: %s", args.out, command)


if __name__ == "__main__":
    main()
