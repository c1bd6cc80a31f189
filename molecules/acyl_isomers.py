"""Acyl isomers at room temperature: the slow degrees of freedom among a molecule's torsions.

An acyl bond C(=O)–N or C(=O)–O (amides, ureas, carbamates, hydrazides, esters, carboxylic acids; and their
thio analogues) is planar, with two isomers (cis/trans, E/Z, syn/anti) separated by a barrier of 10–20
kcal/mol. They do not interconvert at room temperature on the time scale of a conformer search: their
populations follow the Boltzmann law of their *relaxed* energies at the temperature of the ensemble, 298.15 K
(kT = 0.593 kcal/mol), as in the GFN2-xTB reference ensembles.

The torsional model samples every torsion at its training temperature, ``tau = 0.1 eV`` ≈ 2.3 kcal/mol: hot
enough for the soft torsions to cover the reference ensembles, but it puts 10–40 % of its samples on the
disfavoured isomer of an amide whatever its energy (10–20 % for esters, about half for a carboxylic acid's
hydrogen), where the reference ensembles of drugs_dev mostly have none (``benchmarks/results/acyl_isomers.md``).
After MMFF94 relaxation those samples stay on their isomer and match no reference conformer.

This module gives each acyl torsion of a :class:`sampler.torsion_geometry.TorsionSystem` its two isomers'
relaxed MMFF94 energies:

    E_iso = min over seeds s of  E_MMFF94( minimize( x_s with the torsion set to the isomer's planar angle ) )

(a full relaxation: everything else moves, the barrier keeps the isomer; a relaxation that crosses it counts
for the isomer it ends on), and the probability of the isomer whose dihedral ``a–b–c–d`` is near 0,
``p_syn = 1 / (1 + exp((E_syn - E_anti) / kT))``, optionally floored for either isomer.

Primary amides (``C(=O)NH2``) are left alone: turning them swaps two hydrogens and gives the same structure.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from rdkit import Chem
from rdkit.Chem import rdMolTransforms

from energy.mmff import mmff_optimize
from energy.validation import conformer_array
from molecules.constants import DEFAULT_TEMPERATURE_K
from molecules.diversity import dihedrals
from molecules.etkdg import embed
from molecules.rmsd import conformer_coordinates
from molecules.structures import Scorer, scores_or_none, with_conformers
from molecules.torsions import AmideKind, Torsion, TorsionRules, find_torsions
from sampler.torsion_geometry import TorsionSystem

__all__ = [
    "ROOM_TEMPERATURE_KT",
    "AcylIsomers",
    "acyl_isomers",
    "acyl_isomers_or_none",
    "choose_acyl_isomers",
    "is_acyl_torsion",
    "relaxed_isomer_starts",
]

log = logging.getLogger(__name__)

#: k_B T at room temperature (298.15 K) in kcal/mol, MMFF94's energy unit
ROOM_TEMPERATURE_KT = 0.0019872043 * DEFAULT_TEMPERATURE_K


@dataclass(frozen=True)
class AcylIsomers:
    """The two isomers of one acyl torsion.

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


def _acyl_carbon(atom: Chem.Atom) -> bool:
    """A non-aromatic carbon with an exocyclic double bond to O or S."""
    if atom.GetAtomicNum() != 6 or atom.GetIsAromatic():
        return False
    return any(
        b.GetBondType() == Chem.BondType.DOUBLE and not b.IsInRing() and b.GetOtherAtom(atom).GetAtomicNum() in (8, 16)
        for b in atom.GetBonds()
    )


def is_acyl_torsion(mol: Chem.Mol, torsion: Torsion) -> bool:
    """Whether ``torsion`` turns an acyl bond C(=O/S)–N or C(=O/S)–O with two distinct isomers (not a primary
    amide's C(=O)–NH2)."""
    if torsion.amide in (AmideKind.SECONDARY, AmideKind.TERTIARY):
        return True
    if torsion.amide is AmideKind.PRIMARY:
        return False
    b, c = (mol.GetAtomWithIdx(i) for i in torsion.atoms[1:3])
    for carbon, other in ((b, c), (c, b)):
        if _acyl_carbon(carbon) and other.GetAtomicNum() == 8 and not other.GetIsAromatic():
            bond = mol.GetBondBetweenAtoms(carbon.GetIdx(), other.GetIdx())
            return bond is not None and bond.GetBondType() == Chem.BondType.SINGLE
    return False


def acyl_isomers(
    mol: Chem.Mol,
    seeds: np.ndarray,
    *,
    rules: TorsionRules | None = None,
    max_iters: int = 2000,
    scorer: Scorer | None = None,
) -> list[AcylIsomers]:
    """The :class:`AcylIsomers` of every acyl torsion (:func:`is_acyl_torsion`) that ``rules`` keep (the
    torsions of :func:`molecules.torsions.torsion_system` with the same rules), from seeds ``[S, n, 3]`` (Å).
    ``scorer``: each isomer's energy is the minimum of its energies of the MMFF94-relaxed starts instead of
    MMFF94's (MMFF94's for a torsion where it gives any ``nan``).

    Raises:
        ValueError: MMFF94 cannot type the molecule, or the seeds do not fit it.
    """
    n = mol.GetNumAtoms()
    seeds, _ = conformer_array(seeds, n, what="seeds", axis="S", empty=False)
    torsions = find_torsions(mol, TorsionRules() if rules is None else rules)
    acyl = [(k, t) for k, t in enumerate(torsions) if is_acyl_torsion(mol, t)]
    out = []
    for k, torsion in acyl:
        positions, energies, syn = relaxed_isomer_starts(mol, seeds, torsion, max_iters=max_iters)
        other = scores_or_none(scorer, mol, positions)
        energies = energies if other is None else other
        lowest = [float(energies[side].min()) if side.any() else math.inf for side in (syn, ~syn)]
        out.append(AcylIsomers(k, *lowest))
    return out


def relaxed_isomer_starts(
    mol: Chem.Mol, seeds: np.ndarray, torsion: Torsion, *, max_iters: int = 2000
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each seed ``[S, n, 3]`` as is and turned by pi about ``torsion``'s bond, MMFF94-relaxed: positions
    ``[2S, n, 3]``, energies ``[2S]`` (kcal/mol) and whether each ended on the syn isomer (dihedral within 90°
    of 0; a relaxation that crossed the barrier counts for the isomer it ends on)."""
    starts = with_conformers(mol, np.repeat(seeds, 2, axis=0))
    for conf in list(starts.GetConformers())[1::2]:
        angle = rdMolTransforms.GetDihedralRad(conf, *torsion.atoms)
        rdMolTransforms.SetDihedralRad(conf, *torsion.atoms, angle + math.pi)
    energies = np.array([e for _, e in mmff_optimize(starts, max_iters=max_iters)])
    positions = conformer_coordinates(starts)
    syn = np.abs(dihedrals(positions, np.array([torsion.atoms]))[:, 0]) < math.pi / 2
    return positions, energies, syn


def acyl_isomers_or_none(
    mol: Chem.Mol,
    systems: Sequence[TorsionSystem],
    *,
    extra_starts: int = 0,
    seed: int = 1,
    scorer: Scorer | None = None,
) -> list[AcylIsomers]:
    """:func:`acyl_isomers` from the systems' seeds (one molecule's); none (the sampled isomers stay) where
    MMFF94 cannot type the molecule. ``extra_starts``: that many ETKDG conformers (``seed``, not 0) added to the
    starts, so that each isomer's energy is a minimum over more relaxations than the kept seeds."""
    seeds = torch.cat([s.seed_positions for s in systems]).double().numpy()
    if extra_starts > 0:
        more = embed(mol, extra_starts, seed)
        if len(more):
            seeds = np.concatenate([seeds, more])
    try:
        return acyl_isomers(mol, seeds, scorer=scorer)
    except ValueError as exc:
        log.info("acyl isomers left as sampled: %s", exc)
        return []


def choose_acyl_isomers(
    phi: torch.Tensor,
    num_samples: int,
    isomers: Sequence[AcylIsomers],
    generator: torch.Generator,
    *,
    kt: float = ROOM_TEMPERATURE_KT,
    floor: float = 0.0,
    planar: bool = False,
) -> torch.Tensor:
    """``phi`` ``[G * m]`` (``G`` samples of one molecule, ``m`` torsions each, in order) with every acyl
    torsion of ``isomers`` (amides, esters, acids) put on an isomer drawn from its Boltzmann law at ``kt``
    (:meth:`AcylIsomers.p_syn`): a sample already on the drawn isomer keeps its angle; one on the other
    isomer is turned by ``pi`` (the deviation from planarity is kept). ``planar``: every acyl torsion is set
    to its drawn isomer's planar angle instead (0 or ``-pi``): an acyl bond is planar, and a sample twisted
    far from it may relax onto the other isomer, or stay twisted."""
    if not isomers:
        return phi
    if phi.ndim != 1 or num_samples < 1 or phi.shape[0] % num_samples:
        raise ValueError(f"phi must be [G * m] for G = {num_samples} samples, got {tuple(phi.shape)}")
    table = phi.reshape(num_samples, -1).clone()
    for iso in isomers:
        want_syn = torch.rand(num_samples, generator=generator) < iso.p_syn(kt, floor)
        angle = table[:, iso.torsion]
        turn = want_syn.to(angle.device) != (angle.abs() < torch.pi / 2)
        if planar:
            flat = torch.zeros_like(angle)
            table[:, iso.torsion] = torch.where(want_syn.to(angle.device), flat, flat - torch.pi)
            continue
        turned = torch.remainder(angle + 2 * torch.pi, 2 * torch.pi) - torch.pi  # angle + pi, wrapped to [-pi, pi)
        table[:, iso.torsion] = torch.where(turn, turned, angle)
    return table.reshape(-1)
