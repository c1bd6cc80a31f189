"""Acyl isomer gaps by several energies, against the reference ensembles' isomer counts (``drugs_dev``).

The product draws each acyl bond's isomer (:mod:`molecules.acyl_isomers`) from the Boltzmann law at 298.15 K of
the two isomers' relaxed MMFF94 energies. Where the references mix both isomers and MMFF94 puts one several
kcal/mol up, that law gives it no samples, and where a better energy would rank them otherwise it would sample
them. This benchmark asks which energy, if any, ranks them as the references do. Per acyl torsion ``a–b–c–d`` of
the named molecules:

- starts: the product's seeds (:func:`inference.torsional_sampling.seed_systems`) and ``--extra-starts`` ETKDG
  conformers, each as is and turned by π about the bond, relaxed by MMFF94 (as :func:`molecules.acyl_isomers.
  acyl_isomers` does); each start counts for the isomer it ends on (dihedral within 90° of 0: syn);
- ``mmff94``: ``E_syn - E_anti`` from the lowest relaxed MMFF94 energy of each isomer (the product's gap);
- ``<model> at MMFF94``: the model's single points at the ``--per-isomer`` lowest MMFF94 starts of each isomer;
- ``<model> relaxed``: those starts relaxed by the model (L-BFGS, ``--fmax`` eV/Å), each counted for the
  isomer it ends on;
- ``references``: the share of reference conformers on the syn isomer, and the syn probability at 298.15 K each
  gap implies.

A CREST ensemble holds every conformer within an energy window (6 kcal/mol), not a Boltzmann sample: the count of
reference conformers on an isomer is how many distinct conformers it has inside the window, so a share of 0.4 is
consistent with a gap of a few kcal/mol either way, while a share of 0 or 1 says the other isomer is above the
window or has no conformer there.

Development set only (``drugs_dev``): never ``spice_test``.

Reproduce: ``python -m benchmarks.isomer_energies --models ani2xt xtb`` (writes
``benchmarks/results/isomer_energies.{md,json}``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rdkit import Chem

from benchmarks.acyl_isomers import syn_share
from energy.protocol import EnergyModel
from energy.registry import build_energy_model
from energy.relax import RelaxConfig, relax
from energy.units import KCAL_PER_MOL_IN_EV
from inference.torsional_sampling import seed_systems
from molecules.acyl_isomers import ROOM_TEMPERATURE_KT, AcylIsomers, is_acyl_torsion, relaxed_isomer_starts
from molecules.diversity import dihedrals
from molecules.etkdg import embed
from molecules.references import load_references
from molecules.rmsd import conformer_coordinates
from molecules.structures import conformer_structures, energy_scorer, with_conformers
from molecules.torsions import TorsionRules, find_torsions

__all__ = ["DEFAULT_MOLECULES", "isomer_gaps"]

log = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parent.parent

#: the drugs_dev molecules whose acyl isomers decide most of its precision
#: (docs/torsional_model.md, "More selection levers")
DEFAULT_MOLECULES = ("rot6_fb3a02e10e", "rot10_132cc1a3da", "rot10_5e9a93d24a")


def _syn(positions: np.ndarray, atoms: tuple[int, int, int, int]) -> np.ndarray:
    """``[C]`` bool: the dihedral ``atoms`` of each conformer ``[C, n, 3]`` within 90° of 0."""
    return np.abs(dihedrals(positions, np.array([atoms]))[:, 0]) < math.pi / 2


def _gap(energies: np.ndarray, syn: np.ndarray) -> float:
    """``min E[syn] - min E[anti]`` (``±inf`` where one isomer has no entry, ``nan`` where neither has)."""
    e_syn = float(energies[syn].min()) if syn.any() else math.inf
    e_anti = float(energies[~syn].min()) if (~syn).any() else math.inf
    return e_syn - e_anti if math.isfinite(e_syn) or math.isfinite(e_anti) else math.nan


def isomer_gaps(
    mol: Chem.Mol,
    starts: np.ndarray,
    models: Mapping[str, EnergyModel],
    *,
    per_isomer: int = 3,
    relax_config: RelaxConfig | None = None,
) -> list[dict[str, Any]]:
    """One row per acyl torsion of ``mol`` (:func:`molecules.acyl_isomers.is_acyl_torsion`, default torsion
    rules): ``torsion`` (index), ``atoms``, ``gaps`` (``E_syn - E_anti`` in kcal/mol by ``"mmff94"`` and, per
    model, ``"<name> at MMFF94"`` and ``"<name> relaxed"``), ``seconds`` per model, from the conformers
    ``starts`` ``[S, n, 3]`` (Å), each as is and turned by π about the bond, MMFF94-relaxed."""
    config = relax_config or RelaxConfig(fmax=0.02, max_steps=400)
    rows = []
    for index, torsion in enumerate(find_torsions(mol, TorsionRules())):
        if not is_acyl_torsion(mol, torsion):
            continue
        positions, mmff, syn = relaxed_isomer_starts(mol, starts, torsion)
        gaps: dict[str, float] = {"mmff94": _gap(mmff, syn)}
        seconds: dict[str, float] = {}
        picks = np.concatenate([np.flatnonzero(side)[np.argsort(mmff[side])[:per_isomer]] for side in (syn, ~syn)])
        for name, model in models.items():
            start = time.perf_counter()
            gaps[f"{name} at MMFF94"] = _gap(energy_scorer(model)(mol, positions[picks]), syn[picks])
            relaxed = relax(model, conformer_structures(with_conformers(mol, positions[picks])), config)
            moved = relaxed.positions.detach().double().numpy().reshape(len(picks), -1, 3)
            energies = np.where(relaxed.valid.numpy(), relaxed.energies.double().numpy() / KCAL_PER_MOL_IN_EV, np.nan)
            ok = np.isfinite(energies)
            gaps[f"{name} relaxed"] = _gap(energies[ok], _syn(moved[ok], torsion.atoms)) if ok.any() else math.nan
            seconds[name] = time.perf_counter() - start
        rows.append({"torsion": index, "atoms": list(torsion.atoms), "gaps": gaps, "seconds": seconds})
    return rows


def _p_syn(gap: float) -> float:
    return AcylIsomers(0, gap, 0.0).p_syn(ROOM_TEMPERATURE_KT) if not math.isnan(gap) else math.nan


def measure(
    data_dir: Path, names: Sequence[str], model_names: Sequence[str], seed: int, extra_starts: int, per_isomer: int
) -> list[dict[str, Any]]:
    refs = load_references("drugs_dev", data_dir, names=list(names))
    models = {name: build_energy_model(name) for name in model_names}
    rows = []
    for ens in refs.ensembles:
        mol = ens.mol
        systems = seed_systems(mol, 4, seed, torch.float64)
        starts = torch.cat([s.seed_positions for s in systems]).double().numpy()
        more = embed(mol, extra_starts, seed + 1) if extra_starts else np.zeros((0, *starts.shape[1:]))
        starts = np.concatenate([starts, more]) if len(more) else starts
        reference = conformer_coordinates(mol)
        for row in isomer_gaps(mol, starts, models, per_isomer=per_isomer):
            row.update(
                molecule=ens.name,
                smiles=ens.smiles,
                num_references=len(reference),
                references=syn_share(reference, tuple(row["atoms"])),
            )
            log.info("%s %s: %s", ens.name, row["atoms"], {k: round(v, 2) for k, v in row["gaps"].items()})
            rows.append(row)
    return rows


def write(rows: list[dict[str, Any]], out_dir: Path, command: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "isomer_energies.json").write_text(json.dumps({"command": command, "rows": rows}, indent=1))
    columns = list(rows[0]["gaps"]) if rows else []
    lines = [
        "# Acyl isomer gaps by energy, against the references (drugs_dev)",
        "",
        f"Reproduce: `{command}`",
        "",
        "E_syn - E_anti in kcal/mol (syn: dihedral a-b-c-d within 90° of 0), each with the syn probability at "
        "298.15 K it implies; references: share of the reference conformers on the syn isomer. A gap whose "
        "implied isomer is one the references never take (share 0 or 1) is in bold.",
        "",
        "| molecule | atoms | refs | syn share | " + " | ".join(columns) + " |",
        "|---|---|---|---|" + "---|" * len(columns),
    ]
    for r in rows:
        cells = []
        for c in columns:
            gap = r["gaps"][c]
            text = f"{gap:+.1f} ({_p_syn(gap):.2f})"
            wrong = (r["references"] == 0 and gap < 0) or (r["references"] == 1 and gap > 0)
            cells.append(f"**{text}**" if wrong else text)
        lines.append(
            f"| {r['molecule']} | {tuple(r['atoms'])} | {r['num_references']} | {r['references']:.2f} | "
            + " | ".join(cells)
            + " |"
        )
    models = sorted({m for r in rows for m in r["seconds"]})
    if models:
        lines += [
            "",
            "Seconds per acyl bond (single points and relaxations of its starts, one process): "
            + ", ".join(f"{m} {np.mean([r['seconds'][m] for r in rows]):.1f}" for m in models),
        ]
    path = out_dir / "isomer_energies.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--molecules", nargs="+", default=list(DEFAULT_MOLECULES), help="drugs_dev names")
    p.add_argument("--models", nargs="*", default=["ani2xt", "xtb"], help="energy models besides MMFF94")
    p.add_argument("--data-dir", type=Path, default=_REPO.parent / "shared" / "data")
    p.add_argument("--out-dir", type=Path, default=_REPO / "benchmarks" / "results")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--extra-starts", type=int, default=8)
    p.add_argument("--per-isomer", type=int, default=3)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    command = "python -m benchmarks.isomer_energies " + shlex.join(sys.argv[1:] if argv is None else argv)
    rows = measure(args.data_dir, args.molecules, args.models, args.seed, args.extra_starts, args.per_isomer)
    log.info("wrote %s; reproduce: %s", write(rows, args.out_dir, command), command)


if __name__ == "__main__":
    main()
