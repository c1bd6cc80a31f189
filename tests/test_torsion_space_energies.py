"""Energies of uniform torsion draws above the seed (``benchmarks.torsion_space_energies``): holding the dihedrals
while relaxing only lowers them, and a molecule with one soft torsion keeps most draws near its seed."""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.torsion_space_energies import energies_above_seed
from molecules.smiles import mol_from_smiles


def test_held_relaxation_lowers_every_draw_and_a_soft_rotor_stays_near_its_seed() -> None:
    torch.set_num_threads(1)
    rigid, relaxed = energies_above_seed(mol_from_smiles("CCOC"), 24, num_seeds=2)
    assert rigid.shape == relaxed.shape == (24,)
    assert np.isfinite(rigid).all() and bool((relaxed <= rigid + 1e-6).all())
    assert bool((relaxed < rigid - 1e-3).any())
    assert np.median(relaxed) < 0.2  # one C-O rotor of ethyl methyl ether: a few kcal/mol at most
    crowded, _ = energies_above_seed(mol_from_smiles("CC(C)(C)CC(C)(C)C(C)(C)CC(C)(C)C"), 24, num_seeds=2)
    assert np.median(crowded) > np.median(rigid)  # rigid rotations of a crowded chain clash
