"""How much of torsion space lies near a seed's energy: MMFF94 energies of uniform torsion draws of each ``drugs_dev``
molecule, relative to its best seed, rigid (``E(x(phi))``, the shipped training target) and after MMFF94 steps
with the rotatable dihedrals held (the relaxed target, ``train-torsional --relax-iterations``).

It sizes the flat-bottomed target's window (``train-torsional --window W``): the share of draws within ``W`` of
the seed is the share of torsion space that target leaves uniform.

Development set only (``drugs_dev``).

Reproduce: ``python -m benchmarks.torsion_space_energies`` (writes
``benchmarks/results/torsion_space_energies.md``).
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

from energy.mmff import mmff_energies, mmff_properties, mmff_torsion_relax
from energy.units import KCAL_PER_MOL_IN_EV
from inference.torsional_sampling import seed_systems, uniform_torsions
from molecules.references import load_references
from molecules.torsions import TorsionRules, find_torsions

__all__ = ["energies_above_seed"]

log = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parent.parent
WINDOWS_EV = (0.2, 0.4, 0.8)


def energies_above_seed(
    mol: Chem.Mol, count: int, *, num_seeds: int = 4, relax_iterations: int = 100, seed: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """``(rigid, relaxed)``: ``[count]`` MMFF94 energies (eV) of uniform torsion draws above the lowest seed."""
    x = uniform_torsions(mol, count, seed=seed, num_seeds=num_seeds)
    seeds = torch.cat([s.seed_positions for s in seed_systems(mol, num_seeds, seed, torch.float64)]).numpy()
    seeds = seeds.reshape(-1, mol.GetNumAtoms(), 3)
    props = mmff_properties(mol)
    dihedrals = np.array([t.atoms for t in find_torsions(mol, TorsionRules())]).reshape(-1, 4)
    relaxed = mmff_torsion_relax(mol, x, dihedrals, max_iters=relax_iterations, properties=props)
    energies = mmff_energies(mol, np.concatenate([seeds, x, relaxed]), properties=props) * KCAL_PER_MOL_IN_EV
    floor = energies[: len(seeds)].min()
    return energies[len(seeds) : len(seeds) + count] - floor, energies[len(seeds) + count :] - floor


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--draws", type=int, default=60, help="uniform draws per molecule")
    p.add_argument("--relax-iterations", type=int, default=100)
    p.add_argument("--data-dir", type=Path, default=_REPO.parent / "shared" / "data")
    p.add_argument("--out-dir", type=Path, default=_REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    command = "python -m benchmarks.torsion_space_energies " + shlex.join(sys.argv[1:] if argv is None else argv)
    refs = load_references("drugs_dev", args.data_dir, max_refs=1)
    head = " | ".join(f"within {w} eV" for w in WINDOWS_EV)
    lines = [
        "# Torsion space near the seed's energy (drugs_dev)",
        "",
        f"Reproduce: `{command}`",
        "",
        f"{args.draws} uniform torsion draws per molecule (the product's seeds); MMFF94 energy above the lowest seed, "
        f"rigid and after {args.relax_iterations} steps with the rotatable dihedrals held: share within each window, "
        "and the median (eV).",
        "",
        f"| molecule | torsions | rigid: {head} | median | held-relaxed: {head} | median |",
        "|---|---|" + "---|" * (2 * len(WINDOWS_EV) + 2),
    ]
    for ens in refs.ensembles:
        rigid, relaxed = energies_above_seed(ens.mol, args.draws, relax_iterations=args.relax_iterations)
        cells = [f"{(rigid < w).mean():.2f}" for w in WINDOWS_EV] + [f"{np.median(rigid):.2f}"]
        cells += [f"{(relaxed < w).mean():.2f}" for w in WINDOWS_EV] + [f"{np.median(relaxed):.2f}"]
        num_torsions = len(find_torsions(ens.mol, TorsionRules()))
        lines.append(f"| {ens.name} | {num_torsions} | " + " | ".join(cells) + " |")
        log.info("%s: %s", ens.name, cells)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / "torsion_space_energies.md"
    path.write_text("\n".join(lines) + "\n")
    log.info("wrote %s; reproduce: %s", path, command)


if __name__ == "__main__":
    main()
