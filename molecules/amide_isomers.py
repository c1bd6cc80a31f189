"""Amide isomers at room temperature: the slow degree of freedom among a molecule's torsions.

A C(=O)–N bond (amides, ureas, carbamates, hydrazides, thioamides) has two planar isomers, cis and trans
(E and Z), separated by a barrier of 15–20 kcal/mol. They do not interconvert at room temperature on the time
scale of a conformer search: their populations follow the Boltzmann law of their *relaxed* energies at the
temperature of the ensemble, 298.15 K (kT = 0.593 kcal/mol), as in the GFN2-xTB reference ensembles.

The torsional model samples every torsion at its training temperature, ``tau = 0.1 eV`` ≈ 2.3 kcal/mol: hot
enough for the soft torsions to cover the reference ensembles, but it puts 10–40 % of the samples on the
disfavoured amide isomer whatever its energy, where the reference ensembles of drugs_dev have none on 23 of
its 33 secondary amide bonds (``benchmarks/results/amide_isomers.md``). After MMFF94 relaxation those samples
stay on their isomer and match no reference conformer.

This module gives each amide torsion of a :class:`sampler.torsion_geometry.TorsionSystem` its two isomers'
relaxed MMFF94 energies:

    E_iso = min over seeds s of  E_MMFF94( minimize( x_s with the torsion set to the isomer's planar angle ) )

(a full relaxation: everything else moves, the barrier keeps the isomer; a relaxation that crosses it counts
for the isomer it ends on), and the probability of the isomer whose dihedral ``a–b–c–d`` is near 0,
``p_syn = 1 / (1 + exp((E_syn - E_anti) / kT))``, floored at ``floor`` for either isomer so that a sample
budget of hundreds keeps a few conformers on an isomer the force field disfavours.

Primary amides (``C(=O)NH2``) are left alone: turning them swaps two hydrogens and gives the same structure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdForceFieldHelpers, rdMolTransforms

from energy.mmff import mmff_properties
from molecules.constants import DEFAULT_TEMPERATURE_K
from molecules.structures import with_conformers
from molecules.torsions import AmideKind, TorsionRules, find_torsions

__all__ = ["ROOM_TEMPERATURE_KT", "AmideIsomers", "amide_isomers"]

#: k_B T at room temperature (298.15 K) in kcal/mol, MMFF94's energy unit
ROOM_TEMPERATURE_KT = 0.0019872043 * DEFAULT_TEMPERATURE_K


@dataclass(frozen=True)
class AmideIsomers:
    """The two isomers of one amide torsion.

    Attributes:
        torsion: index of the torsion in the system (the order of :func:`molecules.torsions.find_torsions`).
        energy_syn: relaxed MMFF94 energy (kcal/mol) of the isomer with dihedral ``a–b–c–d`` near 0; ``inf``
            where no relaxation ended on it.
        energy_anti: the same for the isomer near ``pi``.
    """

    torsion: int
    energy_syn: float
    energy_anti: float

    def p_syn(self, kt: float = ROOM_TEMPERATURE_KT, floor: float = 0.0) -> float:
        """Boltzmann probability of the syn isomer at ``kt`` (kcal/mol), clipped to ``[floor, 1 - floor]``."""
        if kt <= 0:
            raise ValueError(f"kt must be positive, got {kt}")
        if not 0 <= floor <= 0.5:
            raise ValueError(f"floor must be in [0, 0.5], got {floor}")
        gap = self.energy_syn - self.energy_anti
        if math.isnan(gap):  # neither isomer known
            p = 0.5
        elif math.isinf(gap):  # one isomer never reached
            p = float(gap < 0)
        else:
            p = 1.0 / (1.0 + math.exp(min(gap / kt, 700.0)))
        return min(max(p, floor), 1.0 - floor)


def amide_isomers(
    mol: Chem.Mol, seeds: np.ndarray, *, rules: TorsionRules | None = None, max_iters: int = 2000
) -> list[AmideIsomers]:
    """The :class:`AmideIsomers` of every secondary or tertiary amide torsion that ``rules`` keep (the torsions
    of :func:`molecules.torsions.torsion_system` with the same rules), from seeds ``[S, n, 3]`` (Å).

    Raises:
        ValueError: MMFF94 cannot type the molecule, or the seeds do not fit it.
    """
    seeds = np.asarray(seeds, dtype=np.float64)
    if seeds.ndim == 2:
        seeds = seeds[None]
    n = mol.GetNumAtoms()
    if seeds.ndim != 3 or seeds.shape[1:] != (n, 3) or seeds.shape[0] < 1:
        raise ValueError(f"seeds must be [S, {n}, 3] for this molecule, got {seeds.shape}")
    if not np.isfinite(seeds).all():
        raise ValueError("seeds contain NaN or infinite coordinates")
    torsions = find_torsions(mol, TorsionRules() if rules is None else rules)
    amides = [(k, t) for k, t in enumerate(torsions) if t.amide in (AmideKind.SECONDARY, AmideKind.TERTIARY)]
    if not amides:
        return []
    work = with_conformers(mol, seeds[:1])
    props = mmff_properties(work)
    conf = work.GetConformer()
    out = []
    for k, torsion in amides:
        best = {True: math.inf, False: math.inf}  # keyed by "near 0"
        for x in seeds:
            start = rdMolTransforms.GetDihedralRad(_set(conf, x), *torsion.atoms)
            for turn in (0.0, math.pi):
                _set(conf, x)
                rdMolTransforms.SetDihedralRad(conf, *torsion.atoms, start + turn)
                field = rdForceFieldHelpers.MMFFGetMoleculeForceField(work, props)
                field.Minimize(maxIts=max_iters)
                energy = field.CalcEnergy()
                syn = abs(rdMolTransforms.GetDihedralRad(conf, *torsion.atoms)) < math.pi / 2
                best[syn] = min(best[syn], energy)
        out.append(AmideIsomers(k, best[True], best[False]))
    return out


def _set(conf: Chem.Conformer, x: np.ndarray) -> Chem.Conformer:
    for i, p in enumerate(x):
        conf.SetAtomPosition(i, p.tolist())
    return conf
