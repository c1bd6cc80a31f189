"""Torsion-space spread of a set of conformers: fingerprints and thinning of the most crowded.

A conformer's *torsion fingerprint* embeds each heavy-atom torsion's dihedral ``phi_t`` on a circle,
``(cos n_t phi_t, sin n_t phi_t)``, where ``n_t`` is the torsion's symmetry order (2 for a phenyl ring's
flip, 3 for a tert-butyl; 1 otherwise), so conformers that are the same up to a symmetric flip embed at
the same point. The squared Euclidean distance of two fingerprints is ``sum_t 2 (1 - cos n_t (phi_t - psi_t))``.

:func:`thin_crowded` keeps ``keep`` of ``N`` conformers by removing, one at a time, a conformer of the
closest remaining pair: near-duplicates go first, while the set keeps the shape of its law elsewhere (unlike
farthest-point selection, which favours the rare outliers). Dihedrals are computed from the positions, so
conformers drawn from different seeds (ring puckers) are comparable through the same reference atoms.
"""

from __future__ import annotations

import numpy as np
import torch
from rdkit import Chem

from molecules.torsions import RotorKind, TorsionRules, find_torsions
from sampler.torsion_geometry import dihedral

__all__ = ["dihedrals", "symmetry_orders", "thin_crowded", "torsion_fingerprints"]


def dihedrals(positions: np.ndarray, atoms: np.ndarray) -> np.ndarray:
    """Dihedral angles (rad, in ``[-pi, pi)``, RDKit's sign) ``[N, T]`` of ``positions [N, n, 3]`` for ``atoms [T, 4]``
    (:func:`sampler.torsion_geometry.dihedral`)."""
    x = np.asarray(positions, dtype=np.float64)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"positions must be [N, n, 3], got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("positions must be finite")
    return dihedral(torch.from_numpy(x), torch.as_tensor(atoms, dtype=torch.long).reshape(-1, 4)).numpy()


def _end_order(mol: Chem.Mol, atom: int, other: int, ranks: list[int]) -> int:
    """How many equivalent substituents ``atom`` carries besides ``other`` (1 when they differ)."""
    substituents = [n.GetIdx() for n in mol.GetAtomWithIdx(atom).GetNeighbors() if n.GetIdx() != other]
    if len(substituents) >= 2 and len({ranks[i] for i in substituents}) == 1:
        return len(substituents)
    return 1


def symmetry_orders(mol: Chem.Mol, atoms: np.ndarray) -> np.ndarray:
    """Each torsion's symmetry order ``[T]``: rotating by ``2 pi / n`` maps the molecule onto itself."""
    ranks = list(Chem.CanonicalRankAtoms(mol, breakTies=False))
    return np.array(
        [max(_end_order(mol, int(b), int(c), ranks), _end_order(mol, int(c), int(b), ranks)) for _, b, c, _ in atoms],
        dtype=np.int64,
    ).reshape(-1)


def torsion_fingerprints(mol: Chem.Mol, positions: np.ndarray) -> np.ndarray:
    """``[N, 2 T]`` fingerprints (module docstring) of ``positions [N, n, 3]`` over ``mol``'s heavy-atom torsions
    (explicit hydrogens; :func:`molecules.torsions.find_torsions` with the default rules). ``[N, 0]`` for a
    molecule without them."""
    torsions = [t for t in find_torsions(mol, TorsionRules()) if t.rotor is RotorKind.HEAVY]
    x = np.asarray(positions, dtype=np.float64)
    if x.ndim != 3 or x.shape[1] != mol.GetNumAtoms():
        raise ValueError(f"positions must be [N, {mol.GetNumAtoms()}, 3], got {x.shape}")
    if not torsions:
        return np.zeros((x.shape[0], 0))
    atoms = np.array([t.atoms for t in torsions], dtype=np.int64)
    angles = dihedrals(x, atoms) * symmetry_orders(mol, atoms)
    return np.concatenate([np.cos(angles), np.sin(angles)], axis=1)


def thin_crowded(
    fingerprints: np.ndarray, keep: int, *, min_gap: float | None = None, priority: np.ndarray | None = None
) -> np.ndarray:
    """Indices (ascending) of ``keep`` of the ``N`` rows of ``fingerprints [N, D]``: a member of the closest
    remaining pair is removed until ``keep`` remain (of the pair, the one whose next-nearest neighbour is
    closer). ``min_gap``: stop earlier, once no remaining pair is closer than it (only duplicates go; more than
    ``keep`` may remain). ``priority [N]`` (e.g. energies): of the pair, the one with the higher value goes.
    Deterministic; ``O(N^2)`` memory and time."""
    f = np.asarray(fingerprints, dtype=np.float64)
    n = f.shape[0]
    if f.ndim != 2 or not 1 <= keep:
        raise ValueError(f"fingerprints must be [N, D] and keep >= 1, got {f.shape} and {keep}")
    if priority is not None and np.shape(priority) != (n,):
        raise ValueError(f"priority must have one value per row ({n}), got shape {np.shape(priority)}")
    if keep >= n:
        return np.arange(n)
    sq = (f * f).sum(1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * f @ f.T, 0.0)
    np.fill_diagonal(dist, np.inf)
    alive = np.ones(n, dtype=bool)
    nearest, partner = dist.min(1), dist.argmin(1)
    for _ in range(n - keep):
        i = int(np.argmin(nearest))
        if min_gap is not None and nearest[i] >= min_gap * min_gap:
            break
        j = int(partner[i])
        # the member of the pair with the closer second neighbour is the more crowded one
        if priority is not None and priority[i] != priority[j]:
            drop = i if priority[i] > priority[j] else j
        else:
            second_i, second_j = (np.partition(dist[k], 1)[1] if alive.sum() > 2 else np.inf for k in (i, j))
            drop = j if second_j < second_i else i
        alive[drop] = False
        dist[drop, :] = np.inf
        dist[:, drop] = np.inf
        nearest[drop] = np.inf
        stale = np.flatnonzero(alive & (partner == drop))
        if stale.size:
            nearest[stale], partner[stale] = dist[stale].min(1), dist[stale].argmin(1)
    return np.flatnonzero(alive)
