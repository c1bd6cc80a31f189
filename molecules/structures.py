"""RDKit molecules ↔ the energy protocol's :class:`~energy.protocol.Structures`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from rdkit import Chem

from energy.protocol import EnergyModel, Structures
from energy.units import KCAL_PER_MOL_IN_EV

__all__ = [
    "Scorer",
    "conformer_structures",
    "energy_scorer",
    "scores_or_none",
    "spin_multiplicity",
    "total_charge",
    "with_conformers",
]

#: energies (kcal/mol) of ``positions [P, n, 3]`` of a molecule by some energy model, ``nan`` where it does not apply
Scorer = Callable[[Chem.Mol, np.ndarray], np.ndarray]


def total_charge(mol: Chem.Mol) -> int:
    """Sum of formal charges."""
    return int(sum(a.GetFormalCharge() for a in mol.GetAtoms()))


def spin_multiplicity(mol: Chem.Mol) -> int:
    """``2S + 1`` with every radical electron unpaired (high spin), 1 for closed shells."""
    return int(sum(a.GetNumRadicalElectrons() for a in mol.GetAtoms())) + 1


def conformer_structures(
    mol: Chem.Mol, conf_ids: Sequence[int] | None = None, *, dtype: torch.dtype = torch.float64
) -> Structures:
    """One structure per conformer of ``mol`` (all conformers by default), with its connection table.

    ``mol`` must carry explicit hydrogens if the energy model expects them (``Chem.AddHs``).
    """
    if conf_ids is None:
        conf_ids = [c.GetId() for c in mol.GetConformers()]
    n = mol.GetNumAtoms()
    g = len(conf_ids)
    positions = torch.empty((g * n, 3), dtype=dtype)
    for k, cid in enumerate(conf_ids):
        positions[k * n : (k + 1) * n] = torch.as_tensor(mol.GetConformer(int(cid)).GetPositions(), dtype=dtype)
    z = torch.tensor([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=torch.long)
    table = Chem.MolToMolBlock(mol, includeStereo=True)
    return Structures(
        positions=positions,
        num_atoms=torch.full((g,), n, dtype=torch.long),
        atomic_numbers=z.repeat(g),
        total_charge=torch.full((g,), total_charge(mol), dtype=torch.long),
        multiplicity=torch.full((g,), spin_multiplicity(mol), dtype=torch.long),
        connection_tables=(table,) * g,
    )


def with_conformers(mol: Chem.Mol, positions: Sequence[np.ndarray] | np.ndarray) -> Chem.Mol:
    """A copy of ``mol`` whose conformers are ``positions`` (``[C, n, 3]`` Å, 3D, ids ``0 … C-1``)."""
    out = Chem.Mol(mol)
    out.RemoveAllConformers()
    for cid, pos in enumerate(positions):
        conf = Chem.Conformer(out.GetNumAtoms())
        conf.SetPositions(np.ascontiguousarray(pos, dtype=np.float64))
        conf.SetId(cid)
        conf.Set3D(True)
        out.AddConformer(conf, assignId=False)
    return out


def energy_scorer(model: EnergyModel) -> Scorer:
    """A :data:`Scorer` from an energy model (eV): kcal/mol, ``nan`` for the structures it calls invalid."""

    def score(mol: Chem.Mol, positions: np.ndarray) -> np.ndarray:
        result = model.evaluate(conformer_structures(with_conformers(mol, positions)))
        energies = result.energies.detach().cpu().double().numpy() / KCAL_PER_MOL_IN_EV
        return np.where(result.valid.cpu().numpy(), energies, np.nan)

    return score


def scores_or_none(scorer: Scorer | None, mol: Chem.Mol, positions: np.ndarray) -> np.ndarray | None:
    """``scorer``'s energies of ``positions [P, n, 3]`` where it gives a finite one for every row; ``None`` where
    there is no scorer or it does not apply to all of them (the caller keeps its own energies)."""
    if scorer is None:
        return None
    energies = np.asarray(scorer(mol, positions), dtype=np.float64)
    return energies if energies.shape == (len(positions),) and np.isfinite(energies).all() else None
