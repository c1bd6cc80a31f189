"""Global shape of conformers: the heavy-atom radius of gyration, and which reference conformers are compact.

``R_g = sqrt(mean_i |x_i - mean_j x_j|^2)`` over the heavy atoms (unweighted), in Å: a folded conformer (a ring
stacked on another, a chain wrapped around an intramolecular hydrogen bond) has a smaller ``R_g`` than an extended
one of the same molecule. The benchmark splits each reference ensemble into terciles of ``R_g`` and reports the
recall in each, so that a method that misses the folded (or the extended) conformers shows it.
"""

from __future__ import annotations

import numpy as np
from rdkit import Chem

from energy.validation import conformer_array

__all__ = ["radius_of_gyration", "rg_terciles"]


def radius_of_gyration(mol: Chem.Mol, positions: np.ndarray) -> np.ndarray:
    """``[C]`` heavy-atom radius of gyration (Å) of conformers ``[C, n, 3]`` (or one ``[n, 3]``) of ``mol``."""
    x, single = conformer_array(positions, mol.GetNumAtoms(), finite=False)
    heavy = np.array([a.GetAtomicNum() > 1 for a in mol.GetAtoms()])
    y = x[:, heavy if heavy.any() else slice(None)]
    y = y - y.mean(axis=1, keepdims=True)
    rg = np.sqrt((y**2).sum(axis=-1).mean(axis=-1))
    return rg[0:1] if single else rg


def rg_terciles(rg: np.ndarray) -> np.ndarray:
    """``[C]`` int in {0, 1, 2}: each conformer's tercile of ``rg`` within its own ensemble (0: the most compact
    third), by rank, ties broken by order, so the three groups differ in size by at most one."""
    rg = np.asarray(rg, dtype=np.float64)
    ranks = np.empty(len(rg), dtype=np.int64)
    ranks[np.argsort(rg, kind="stable")] = np.arange(len(rg))
    return (3 * ranks) // max(len(rg), 1)
