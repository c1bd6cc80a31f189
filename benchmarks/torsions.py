"""The measurements behind :mod:`molecules.torsions`' choices, on the SPICE test and GEOM-DRUGS dev SMILES.

- counts: torsions per molecule under the rule sets (published = every hydrogen rotor and amide; heavy
  atoms only; the default), linear chains bridged, rotors of each kind;
- hydrogen rotors (MMFF94, kcal/mol): for each rotor, on MMFF-relaxed ETKDG conformers ``C_0 .. C_{k-1}``,
  the *freezing cost* ``E(C_j with the rotor at C_0's angle) - min over the rotor's angle (36 values)``,
  everything else fixed (what a torsional model that freezes the rotor at the seed loses), and the energy
  spread of a full turn at ``C_0``;
- amides: the MMFF energy of the amide turned by 180° from the relaxed seed and relaxed again, minus the
  seed's, and how often ETKDG itself puts an amide the other way round;
- seeds: pairwise ring-system RMSD between ETKDG conformers of ring-bearing molecules, and how many
  seeds survive the de-duplication thresholds;
- against the reference ensembles: how often a reference conformer has an amide the other way round from
  the ETKDG seed, and how many reference ring shapes lie within 0.3 Å of a seed's (1, 10, 30 embeddings);
- the time of ``x(phi)`` (and its vector–Jacobian product) for 64 samples of a ~50-atom molecule.

Reproduce: ``python -m benchmarks.torsions [--data-dir ../shared/data]`` (a few minutes on one core); writes
``benchmarks/results/torsion_choices.md``.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rdkit import Chem, rdBase
from rdkit.Chem import rdForceFieldHelpers

from molecules.etkdg import embed
from molecules.references import DATASETS, load_references
from molecules.rmsd import kabsch_rmsd
from molecules.smiles import mol_from_smiles
from molecules.structures import with_conformers
from molecules.torsions import (
    AmideKind,
    AmideRotors,
    HydrogenRotors,
    RotorKind,
    Torsion,
    TorsionRules,
    embed_seeds,
    find_torsions,
    ring_rmsd,
    ring_systems,
    torsion_system,
)
from sampler.torsion_geometry import (
    TorsionBatch,
    collate_torsion_systems,
    dihedral,
    torsion_gradient,
    torsion_positions,
)

__all__ = ["RULE_SETS", "main", "read_smiles", "torsion_report"]

log = logging.getLogger(__name__)

RULE_SETS: dict[str, TorsionRules] = {
    "published (all H rotors, all amides)": TorsionRules(hydrogen_rotors=HydrogenRotors.ALL, amides=AmideRotors.ALL),
    "heavy atoms only (no H rotors, all amides)": TorsionRules(
        hydrogen_rotors=HydrogenRotors.NONE, amides=AmideRotors.ALL
    ),
    "default (no CH3/NH3+ tops, all amides)": TorsionRules(),
    "no CH3/NH3+ tops, tertiary amides only": TorsionRules(amides=AmideRotors.TERTIARY),
}
_SCAN = np.linspace(-math.pi, math.pi, 36, endpoint=False)
_TAU_KCAL = 5e-3 / 0.0433641  # the published temperature, 5 meV, in kcal/mol
_REBUILT_KCAL = 10.0  # rebuilt conformers further than this above their relaxed selves are left out


def read_smiles(path: Path) -> list[str]:
    """SMILES column of a benchmark index file (tab separated, header ``Rotatable_Bonds SMILES Hash_Name``)."""
    lines = path.read_text().splitlines()[1:]
    return [line.split("\t")[1] for line in lines if line.strip()]


def _rotate_to(x: np.ndarray, t: Torsion, angle: float) -> np.ndarray:
    """``x`` with torsion ``t`` set to ``angle`` (its moving side turned; centred), nothing else changed."""
    batch = TorsionBatch.single(torch.as_tensor(x), torsion_atoms=torch.tensor([t.atoms]), moving=[t.moving])
    return torsion_positions(batch, torch.tensor([angle], dtype=torch.float64)).numpy()


def _angle(x: np.ndarray, t: Torsion) -> float:
    return float(dihedral(torch.as_tensor(x), torch.tensor([t.atoms]))[0])


@dataclass
class _Molecule:
    mol: Chem.Mol
    raw: np.ndarray  # [k, n, 3] ETKDG
    relaxed: np.ndarray  # [k, n, 3] MMFF94-optimized
    force_field: Any


def _prepare(smiles: str, num_conformers: int) -> _Molecule | None:
    mol = mol_from_smiles(smiles)
    raw = embed(mol, num_conformers, seed=7)
    if len(raw) < 2:
        return None
    work = with_conformers(mol, raw)
    with rdBase.BlockLogs():
        if not rdForceFieldHelpers.MMFFHasAllMoleculeParams(work):
            return None
        rdForceFieldHelpers.MMFFOptimizeMoleculeConfs(work, maxIters=2000)
        props = rdForceFieldHelpers.MMFFGetMoleculeProperties(work)
        ff = rdForceFieldHelpers.MMFFGetMoleculeForceField(work, props, nonBondedThresh=1e9)
    relaxed = np.stack([work.GetConformer(k).GetPositions() for k in range(len(raw))])
    return _Molecule(mol, raw, relaxed, ff)


def _energy(m: _Molecule, x: np.ndarray) -> float:
    return float(m.force_field.CalcEnergy(x.ravel().tolist()))


def _relaxed_energy(m: _Molecule, x: np.ndarray) -> tuple[float, np.ndarray]:
    work = with_conformers(m.mol, [x])
    with rdBase.BlockLogs():
        rdForceFieldHelpers.MMFFOptimizeMoleculeConfs(work, maxIters=5000)
    y = work.GetConformer(0).GetPositions()
    return _energy(m, y), y


def _hydrogen_rotor_rows(m: _Molecule, every: list[Torsion], r: int) -> tuple[list[float], float, list[float]]:
    """For rotor ``every[r]``: freezing costs on conformers 1.., the spread of a full turn on conformer 0,
    and how far the rebuilt conformers lie above the relaxed ones (best rotor angle)."""
    system = torsion_system(m.mol, m.relaxed[0], rules=RULE_SETS["published (all H rotors, all amides)"])
    batch = collate_torsion_systems([system], samples_per_system=len(_SCAN) + 1)
    atoms = system.torsion_atoms
    frozen = float(dihedral(torch.as_tensor(m.relaxed[0]), atoms)[r])
    costs, offsets, spread = [], [], 0.0
    for j, x in enumerate(m.relaxed):
        phi = dihedral(torch.as_tensor(x), atoms).repeat(len(_SCAN) + 1, 1)
        phi[:, r] = torch.as_tensor(np.append(_SCAN, frozen))
        rebuilt = torsion_positions(batch, phi.reshape(-1)).reshape(len(_SCAN) + 1, -1, 3).numpy()
        energies = np.array([_energy(m, y) for y in rebuilt])
        if j == 0:
            spread = float(energies.max() - energies.min())
            continue
        offsets.append(float(energies.min() - _energy(m, x)))
        if offsets[-1] < _REBUILT_KCAL:  # the others clash (a different ring pucker, say): not the rotor's doing
            costs.append(float(energies[-1] - energies.min()))
    return costs, spread, offsets


def _amide_row(m: _Molecule, t: Torsion) -> tuple[float, bool, float]:
    """(relaxed E(turned) - E(seed) kcal/mol, stayed turned, fraction of ETKDG conformers turned vs the first)."""
    x0 = m.relaxed[0]
    e0 = _energy(m, x0)
    seed_angle = _angle(x0, t)
    e1, y = _relaxed_energy(m, _rotate_to(x0, t, seed_angle + math.pi))
    stayed = abs(math.remainder(_angle(y, t) - seed_angle, 2 * math.pi)) > math.pi / 2
    raw0 = _angle(m.raw[0], t)
    flipped = [abs(math.remainder(_angle(x, t) - raw0, 2 * math.pi)) > math.pi / 2 for x in m.raw[1:]]
    return e1 - e0, stayed, float(np.mean(flipped))


def _quantiles(values: list[float]) -> str:
    if not values:
        return "–"
    v = np.asarray(values)
    return f"{np.median(v):.2f} / {np.quantile(v, 0.9):.2f} / {v.max():.2f}"


def _counts_section(sets: dict[str, list[Chem.Mol]]) -> list[str]:
    out = ["## Torsions per molecule", "", "| rule set | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for name, rules in RULE_SETS.items():
        cells = []
        for mols in sets.values():
            n = [len(find_torsions(m, rules)) for m in mols]
            cells.append(f"{np.mean(n):.2f} (max {max(n)})")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out += ["", "| kind (all torsions) | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    kinds: dict[str, list[int]] = defaultdict(lambda: [0] * len(sets))
    for j, mols in enumerate(sets.values()):
        for m in mols:
            for t in find_torsions(m):
                kinds[f"rotor: {t.rotor.value}"][j] += 1
                if t.amide is not AmideKind.NONE:
                    kinds[f"amide: {t.amide.value}"][j] += 1
                if t.chain:
                    kinds["across a linear chain"][j] += 1
        kinds["molecules"][j] = len(mols)
        kinds["nitriles and other sp chains ending in a terminal atom (no torsion)"][j] = sum(
            len(m.GetSubstructMatches(Chem.MolFromSmarts("[!#1]-[$([*;X2]#[*;X1]),$([*;X2]=[*]=[*;X1])]")))
            for m in mols
        )
    out += [f"| {k} | " + " | ".join(map(str, v)) + " |" for k, v in sorted(kinds.items())]
    return out


def _rotor_class(m: Chem.Mol, t: Torsion) -> str:
    hydrogen_side = next(
        i
        for i, j in ((t.atoms[1], t.atoms[2]), (t.atoms[2], t.atoms[1]))
        if all(n.GetAtomicNum() == 1 for n in m.GetAtomWithIdx(i).GetNeighbors() if n.GetIdx() != j)
    )
    atom = m.GetAtomWithIdx(hydrogen_side)
    hs = sum(1 for n in atom.GetNeighbors() if n.GetAtomicNum() == 1)
    charge = "+" if atom.GetFormalCharge() > 0 else ""
    geometry = " planar" if hs == 2 and atom.GetHybridization() == Chem.HybridizationType.SP2 else ""
    return f"{atom.GetSymbol()}H{hs if hs > 1 else ''}{charge}{geometry}"


def _energy_sections(molecules: list[_Molecule]) -> list[str]:
    costs: dict[str, list[float]] = defaultdict(list)
    spreads: dict[str, list[float]] = defaultdict(list)
    offsets: dict[str, list[float]] = defaultdict(list)
    amides: dict[str, list[tuple[float, bool, float]]] = defaultdict(list)
    for m in molecules:
        every = find_torsions(m.mol, RULE_SETS["published (all H rotors, all amides)"])
        for r, t in enumerate(every):
            if t.rotor is not RotorKind.HEAVY:
                cls = f"{_rotor_class(m.mol, t)} ({t.rotor.value})"
                c, s, o = _hydrogen_rotor_rows(m, every, r)
                costs[cls] += c
                spreads[cls].append(s)
                offsets[cls] += o
            if t.amide is not AmideKind.NONE:
                amides[t.amide.value].append(_amide_row(m, t))
    out = [
        f"## Hydrogen rotors (MMFF94, kcal/mol; the sampling temperature 5 meV is {_TAU_KCAL:.3f} kcal/mol)",
        "",
        "Freezing cost: the torsional model with seed = relaxed conformer 0, every torsion set to relaxed "
        "conformer j's (j >= 1), except the rotor, frozen at the seed's angle; minus the best over a full turn "
        f"of the rotor (only rebuilt conformers within {_REBUILT_KCAL:g} kcal/mol of relaxed j: n). Spread: "
        "max - min over a full turn on the seed. Rebuilt: best rebuilt energy minus relaxed conformer j's "
        "(how far the frozen bond lengths and angles put the rebuilt conformers).",
        "",
        "| rotor | rotors | n | freezing cost median / p90 / max | cost > 1 kcal/mol | spread median / p90 / max "
        "| rebuilt median / p90 |",
        "|---|---|---|---|---|---|---|",
    ]
    for cls in sorted(costs):
        frac = float(np.mean(np.asarray(costs[cls]) > 1.0)) if costs[cls] else 0.0
        out.append(
            f"| {cls} | {len(spreads[cls])} | {len(costs[cls])} | {_quantiles(costs[cls])} | {frac:.0%} "
            f"| {_quantiles(spreads[cls])} "
            f"| {np.median(offsets[cls]):.2f} / {np.quantile(offsets[cls], 0.9):.2f} |"
        )
    out += [
        "",
        "## Amide C(=O)–N bonds (MMFF94, kcal/mol)",
        "",
        "Turned: the relaxed seed's amide turned by 180° and relaxed again; ΔE = E(turned) - E(seed). "
        "ETKDG flips: the fraction of ETKDG conformers whose amide angle is more than 90° from conformer 0's.",
        "",
        "| amide | bonds | ΔE median / p90 / max | ΔE < 0 (min) | stayed turned | ETKDG flips (mean) |",
        "|---|---|---|---|---|---|",
    ]
    for kind, rows in sorted(amides.items()):
        de = [r[0] for r in rows]
        out.append(
            f"| {kind} | {len(rows)} | {_quantiles(de)} | {sum(d < 0 for d in de)} ({min(de):.2f}) | "
            f"{np.mean([r[1] for r in rows]):.0%} | {np.mean([r[2] for r in rows]):.2f} |"
        )
    return out


def _seed_section(molecules: list[_Molecule]) -> list[str]:
    out = [
        "## Seed diversity (ETKDG, ring systems, Å)",
        "",
        "Per molecule: the largest pairwise ring-system RMSD (heavy ring atoms and their heavy neighbours) "
        "among its ETKDG conformers, and how many of them de-duplication keeps.",
        "",
        "| molecules | n | max pairwise ring RMSD median / p90 / max | seeds kept at 0.1 Å | at 0.3 Å |",
        "|---|---|---|---|---|",
    ]
    groups: dict[str, list[_Molecule]] = defaultdict(list)
    for m in molecules:
        ring = [a for a in m.mol.GetAtoms() if a.IsInRing()]
        if not ring:
            continue
        aliphatic = any(not a.GetIsAromatic() for a in ring)
        groups["with a non-aromatic ring" if aliphatic else "aromatic rings only"].append(m)
    for name, ms in sorted(groups.items()):
        maxima: list[float] = []
        kept: dict[float, list[int]] = {0.1: [], 0.3: []}
        for m in ms:
            d = ring_rmsd(m.mol, m.raw)
            maxima.append(float(d.max()))
            for thr, lst in kept.items():
                chosen: list[int] = []
                for k in range(len(d)):
                    if all(d[k, j] > thr for j in chosen):
                        chosen.append(k)
                lst.append(len(chosen))
        out.append(
            f"| {name} | {len(ms)} | {_quantiles(maxima)} | {np.mean(kept[0.1]):.1f} of {len(ms[0].raw)} | "
            f"{np.mean(kept[0.3]):.1f} (median {np.median(kept[0.3]):.0f}) |"
        )
    strain = [_energy(m, m.raw[k]) - _energy(m, m.relaxed[k]) for m in molecules for k in range(len(m.raw))]
    out += ["", f"MMFF94 energy of raw ETKDG conformers above their relaxed selves: {_quantiles(strain)} kcal/mol."]
    return out


def _reference_section(data_dir: Path, max_refs: int) -> list[str]:
    """What the frozen parts of the torsional model cost against the reference ensembles."""
    amides: dict[str, list[tuple[float, float]]] = defaultdict(list)
    rings: dict[str, list[tuple[float, float, float, int, int]]] = defaultdict(list)
    for dataset in DATASETS:
        for ens in load_references(dataset, data_dir, max_refs=max_refs).ensembles:
            mol = ens.mol
            refs = np.stack([c.GetPositions() for c in mol.GetConformers()])
            etkdg = embed(mol, 10, seed=7)
            for t in find_torsions(mol):
                if t.amide is AmideKind.NONE:
                    continue
                seed_angle = _angle(etkdg[0], t)
                turned = [abs(math.remainder(_angle(x, t) - seed_angle, 2 * math.pi)) > math.pi / 2 for x in refs]
                flips = [abs(math.remainder(_angle(x, t) - seed_angle, 2 * math.pi)) > math.pi / 2 for x in etkdg[1:]]
                amides[t.amide.value].append((float(np.mean(turned)), float(np.mean(flips))))
            if not ring_systems(mol):
                continue
            aliphatic = any(a.IsInRing() and not a.GetIsAromatic() for a in mol.GetAtoms())
            covered = []
            for num_seeds in (1, 10, 30):
                seeds = embed_seeds(mol, num_seeds, seed=7)
                d = np.zeros((len(refs), len(seeds)))
                for atoms in ring_systems(mol):
                    d = np.maximum(d, kabsch_rmsd(refs[:, None, atoms], seeds[None, :, atoms]))
                covered.append((float(np.mean(d.min(1) < 0.3)), len(seeds)))
            group = "with a non-aromatic ring" if aliphatic else "aromatic rings only"
            rings[group].append((covered[0][0], covered[1][0], covered[2][0], covered[1][1], covered[2][1]))
    out = [
        f"## Against the reference ensembles (SPICE test + DRUGS dev, at most {max_refs} conformers each)",
        "",
        "Amides: the fraction of reference conformers whose amide angle is more than 90° from an ETKDG seed's "
        "(what freezing the amide at the seed puts out of reach), and the same among 9 more ETKDG conformers.",
        "",
        "| amide | bonds | refs turned (mean) | bonds with > 10 % refs turned | ETKDG turned (mean) |",
        "|---|---|---|---|---|",
    ]
    for kind, rows in sorted(amides.items()):
        ref_turned = [r[0] for r in rows]
        out.append(
            f"| {kind} | {len(rows)} | {np.mean(ref_turned):.2f} | {sum(f > 0.1 for f in ref_turned)} | "
            f"{np.mean([r[1] for r in rows]):.2f} |"
        )
    out += [
        "",
        "Rings: the fraction of reference conformers whose every ring system (heavy ring atoms and heavy "
        "neighbours) lies within 0.3 Å RMSD of the same system in some seed (`embed_seeds`, de-duplicated at "
        "0.3 Å), for 1, 10 and 30 ETKDG embeddings; mean over molecules (seeds kept in brackets).",
        "",
        "| molecules | n | 1 seed | 10 embeddings | 30 embeddings |",
        "|---|---|---|---|---|",
    ]
    for group, ring_rows in sorted(rings.items()):
        v = np.asarray(ring_rows)
        out.append(
            f"| {group} | {len(ring_rows)} | {v[:, 0].mean():.2f} | {v[:, 1].mean():.2f} ({v[:, 3].mean():.1f}) | "
            f"{v[:, 2].mean():.2f} ({v[:, 4].mean():.1f}) |"
        )
    return out


def _timing_section(smiles: str, samples: int = 64, repeats: int = 20) -> list[str]:
    mol = mol_from_smiles(smiles)
    seeds = embed(mol, 1, seed=3)
    out = ["## Timing (one CPU thread)", ""]
    for name, rules in RULE_SETS.items():
        system = torsion_system(mol, seeds, rules=rules)
        batch = collate_torsion_systems([system], samples_per_system=samples)
        phi = (torch.rand(batch.num_torsions, dtype=torch.float64) * 2 - 1) * math.pi
        torsion_gradient(batch, phi, torch.randn(batch.positions.shape, dtype=torch.float64))  # warm up
        start = time.perf_counter()
        for _ in range(repeats):
            x = torsion_positions(batch, phi)
        forward = (time.perf_counter() - start) / repeats
        g = torch.randn_like(x)
        start = time.perf_counter()
        for _ in range(repeats):
            torsion_gradient(batch, phi, g)
        vjp = (time.perf_counter() - start) / repeats
        out.append(
            f"- {name}: {mol.GetNumAtoms()} atoms, {system.num_torsions} torsions, {samples} samples: "
            f"x(phi) {forward * 1e3:.2f} ms, x(phi) + VJP {vjp * 1e3:.2f} ms"
        )
    return out


def torsion_report(
    data_dir: Path, *, num_conformers: int = 10, max_refs: int = 64, timing_smiles: str | None = None
) -> str:
    """The markdown report (see the module docstring)."""
    torch.set_num_threads(1)
    files = {
        "SPICE test": data_dir / "spice" / "spice_test.txt",
        "GEOM-DRUGS dev": data_dir / "drugs" / "drugs_dev.txt",
    }
    smiles = {name: read_smiles(path) for name, path in files.items()}
    mols = {name: [mol_from_smiles(s) for s in ss] for name, ss in smiles.items()}
    lines = ["# Torsion choices (benchmarks/torsions.py)", "", *_counts_section(mols), ""]
    prepared = {name: [_prepare(s, num_conformers) for s in ss] for name, ss in smiles.items()}
    usable = {name: [p for p in ps if p is not None] for name, ps in prepared.items()}
    lines += [*_energy_sections([p for ps in usable.values() for p in ps]), ""]
    lines += [*_seed_section(usable["SPICE test"]), ""]
    if max_refs > 0:
        lines += [*_reference_section(data_dir, max_refs), ""]
    if timing_smiles is None:  # the SPICE/DRUGS molecule closest to 50 atoms, most torsions first
        every = [m for ms in mols.values() for m in ms]
        best = min(every, key=lambda m: (abs(m.GetNumAtoms() - 50), -len(find_torsions(m))))
        timing_smiles = Chem.MolToSmiles(Chem.RemoveHs(best))
    lines += _timing_section(timing_smiles)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "torsion_choices.md")
    parser.add_argument("--num-conformers", type=int, default=10)
    parser.add_argument("--max-refs", type=int, default=64, help="reference conformers per molecule (0: skip)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    report = torsion_report(args.data_dir, num_conformers=args.num_conformers, max_refs=args.max_refs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
