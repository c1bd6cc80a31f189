"""Acyl isomers on ``drugs_dev``: how the reference ensembles, ETKDG, the torsional network alone and the product
(isomers drawn at room temperature, :mod:`molecules.acyl_isomers`) populate each acyl bond's two isomers.

For every acyl torsion ``a–b–c–d`` the model samples (amides, esters, acids), the share of conformers whose
dihedral is within 90° of 0 ("syn"), in the reference ensemble (L <= 512 conformers), in K = 2L ETKDG
embeddings, in K raw samples of the network alone and K raw samples of the product (the barrier keeps the
isomer through MMFF94 relaxation). A carboxylic acid's hydrogen does not enter the heavy-atom RMSD of the
benchmark, but a wrong one costs ~5 kcal/mol. ``p_syn`` is the product's Boltzmann probability at 298.15 K from the
relaxed MMFF94 energies of both isomers. The summary gives the mean absolute error of the syn share against
the references, and the share of samples put on an isomer the reference ensemble does not have at all.

Development set only (``drugs_dev``): never ``spice_test``.

Reproduce: ``python -m benchmarks.acyl_isomers`` (writes ``benchmarks/results/acyl_isomers.{md,json}``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rdkit import Chem

from benchmarks.methods import EtkdgGenerator
from inference.torsional_sampling import ISOMER_FLOOR, TorsionalSampler, seed_systems
from molecules.acyl_isomers import acyl_isomers
from molecules.references import load_references
from molecules.rmsd import conformer_coordinates
from molecules.torsions import Torsion, TorsionRules, find_torsions
from sampler.torsion_geometry import dihedral

__all__ = ["syn_share"]

log = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parent.parent
_METHODS = ("references", "etkdg", "network", "product")


def syn_share(positions: np.ndarray, atoms: tuple[int, int, int, int]) -> float:
    """Share of the conformers ``[C, n, 3]`` whose dihedral ``atoms`` lies within 90° of 0."""
    x = torch.as_tensor(positions, dtype=torch.float64)
    abcd = torch.tensor([atoms])
    angles = torch.stack([dihedral(c, abcd)[0] for c in x])
    return float((angles.abs() < math.pi / 2).double().mean())


def measure(data_dir: Path, checkpoint: Path, seed: int, max_refs: int) -> list[dict[str, Any]]:
    """One row per acyl torsion of every ``drugs_dev`` molecule that has one."""
    refs = load_references("drugs_dev", data_dir, max_refs=max_refs)
    product = TorsionalSampler(checkpoint)
    network = TorsionalSampler(checkpoint, isomer_floor=None)
    rows = []
    for ens in refs.ensembles:
        mol = ens.mol
        torsions = find_torsions(mol, TorsionRules())
        systems = seed_systems(mol, product.config.num_seeds, seed, torch.float64)
        isomers = acyl_isomers(mol, torch.cat([s.seed_positions for s in systems]).numpy())
        if not isomers:
            continue
        k = 2 * ens.num_conformers
        samples = {
            "references": conformer_coordinates(mol),
            "etkdg": conformer_coordinates(EtkdgGenerator(1).generate(mol, k, seed)),
            "network": network.sample_positions(mol, k, seed=seed),
            "product": product.sample_positions(mol, k, seed=seed),
        }
        for iso in isomers:
            atoms = torsions[iso.torsion].atoms
            row: dict[str, Any] = {
                "molecule": ens.name,
                "smiles": Chem.MolToSmiles(Chem.RemoveHs(mol)),
                "atoms": list(atoms),
                "kind": _kind(mol, torsions[iso.torsion]),
                "num_references": ens.num_conformers,
                "gap_kcal": iso.energy_syn - iso.energy_anti,
                "p_syn": iso.p_syn(floor=ISOMER_FLOOR or 0.0),
            }
            for method, x in samples.items():
                row[method] = syn_share(x, atoms)
            rows.append(row)
            log.info("%s %s: %s", ens.name, atoms, {m: round(row[m], 2) for m in _METHODS})
    return rows


def _kind(mol: Chem.Mol, torsion: Torsion) -> str:
    """``amide-secondary``, ``amide-tertiary``, ``ester`` or ``acid`` (the O carries a hydrogen)."""
    if torsion.amide.value != "none":
        return f"amide-{torsion.amide.value}"
    b, c = (mol.GetAtomWithIdx(i) for i in torsion.atoms[1:3])
    oxygen = b if b.GetAtomicNum() == 8 else c
    return "acid" if oxygen.GetTotalNumHs(includeNeighbors=True) else "ester"


def summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per method: mean |syn share - references| over bonds, and the mean share of samples on an isomer the
    references never take (over the bonds whose references are all on one isomer)."""
    ref = np.array([r["references"] for r in rows])
    one_sided = (ref == 0) | (ref == 1)
    out = {}
    for m in _METHODS[1:]:
        share = np.array([r[m] for r in rows])
        wrong = np.where(ref == 1, 1 - share, share)
        out[m] = {
            "mae": float(np.abs(share - ref).mean()),
            "absent_isomer": float(wrong[one_sided].mean()) if one_sided.any() else 0.0,
        }
    return out


def write(rows: list[dict[str, Any]], out_dir: Path, command: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "acyl_isomers.json").write_text(json.dumps({"command": command, "rows": rows}, indent=1))
    ref = np.array([r["references"] for r in rows])
    lines = [
        "# Acyl isomers on drugs_dev",
        "",
        f"Reproduce: `{command}`",
        "",
        f"{len(rows)} acyl torsions in {len({r['molecule'] for r in rows})} molecules; "
        f"{int(((ref == 0) | (ref == 1)).sum())} have every reference conformer on one isomer. Share of conformers "
        "on the syn isomer (dihedral a-b-c-d within 90° of 0); K = 2L conformers per method; raw samples (the "
        "barrier keeps the isomer through MMFF94). gap: E_syn - E_anti, relaxed MMFF94 (kcal/mol); "
        f"p_syn: the product's Boltzmann probability at 298.15 K, floor {ISOMER_FLOOR}.",
        "",
        "| method | mean abs. error of the syn share | samples on an isomer the references lack |",
        "|---|---|---|",
    ]
    for m, s in summary(rows).items():
        lines.append(f"| {m} | {s['mae']:.3f} | {100 * s['absent_isomer']:.1f} % |")
    lines += ["", "| molecule | atoms | kind | L | gap | p_syn | references | ETKDG | network | product |"]
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        lines.append(
            f"| {r['molecule']} | {tuple(r['atoms'])} | {r['kind']} | {r['num_references']} | {r['gap_kcal']:+.1f} | "
            f"{r['p_syn']:.2f} | {r['references']:.2f} | "
            f"{r['etkdg']:.2f} | {r['network']:.2f} | {r['product']:.2f} |"
        )
    path = out_dir / "acyl_isomers.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--checkpoint", type=Path, default=_REPO / "checkpoints" / "torsional.pt")
    p.add_argument("--data-dir", type=Path, default=_REPO.parent / "shared" / "data")
    p.add_argument("--out-dir", type=Path, default=_REPO / "benchmarks" / "results")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max-refs", type=int, default=512)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    command = "python -m benchmarks.acyl_isomers " + shlex.join(sys.argv[1:] if argv is None else argv)
    rows = measure(args.data_dir, args.checkpoint, args.seed, args.max_refs)
    log.info("wrote %s; reproduce: %s", write(rows, args.out_dir, command), command)


if __name__ == "__main__":
    main()
