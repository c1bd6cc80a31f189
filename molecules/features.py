"""Graph features of a molecule for the control network.

Richer than the published model's (one-hot element and a bonded flag, ALGORITHM.md section 6):

- atoms: element, formal charge, aromaticity, hybridization, ring membership (and small rings), number
  of attached hydrogens, degree, chirality tag;
- atom pairs (every ordered pair: the network is fully connected over the molecule): bond order
  (none/single/double/triple/aromatic), conjugation, ring bond, rotatable bond, double-bond stereo
  (cis/trans as written in the SMILES), and the topological distance (1, 2, 3, >= 4 bonds), which tells the
  network which pairs are 1-3 (angles) and 1-4 (torsions) neighbours.

An EGNN sees only distances, so it cannot tell enantiomers apart: the chirality tag is a feature, but the
sampler's stereo check (``molecules.stereo``) is what guarantees the requested configuration.
"""

from __future__ import annotations

import numpy as np
import torch
from rdkit import Chem
from rdkit.Chem import rdMolDescriptors

__all__ = [
    "ATOM_FEATURES",
    "ELEMENTS",
    "PAIR_FEATURES",
    "UnsupportedElementError",
    "atom_features",
    "pair_features",
    "rotatable_bonds",
]

# H B C N O F Si P S Cl Br I: the elements of drug-like molecules (SPICE and GEOM-DRUGS).
ELEMENTS: tuple[int, ...] = (1, 5, 6, 7, 8, 9, 14, 15, 16, 17, 35, 53)
_CHARGES = (-1, 0, 1)
_HYBRIDIZATIONS = (
    Chem.HybridizationType.S,
    Chem.HybridizationType.SP,
    Chem.HybridizationType.SP2,
    Chem.HybridizationType.SP3,
)
_CHIRAL_TAGS = (Chem.ChiralType.CHI_TETRAHEDRAL_CW, Chem.ChiralType.CHI_TETRAHEDRAL_CCW)
_BOND_TYPES = (Chem.BondType.SINGLE, Chem.BondType.DOUBLE, Chem.BondType.TRIPLE, Chem.BondType.AROMATIC)
_CIS = (Chem.BondStereo.STEREOZ, Chem.BondStereo.STEREOCIS)
_TRANS = (Chem.BondStereo.STEREOE, Chem.BondStereo.STEREOTRANS)

# element | charge | aromatic | hybridization (+other) | ring, 3-ring, 4-ring | H count 0..3 | degree 1..4 | chiral
ATOM_FEATURES = len(ELEMENTS) + len(_CHARGES) + 1 + len(_HYBRIDIZATIONS) + 1 + 3 + 4 + 4 + len(_CHIRAL_TAGS)
# no bond + bond types | conjugated, ring bond, rotatable | cis, trans | topological distance 1, 2, 3, >= 4
PAIR_FEATURES = 1 + len(_BOND_TYPES) + 3 + 2 + 4

_ROTATABLE = Chem.MolFromSmarts("[!$([NH])&!$([NH2])&!$(C(F)(F)F)&!D1&!$(*#*)]-&!@[!$([NH])&!$([NH2])&!D1&!$(*#*)]")


class UnsupportedElementError(ValueError):
    """The molecule contains an element the control network has no feature for."""


def _one_hot(value: object, choices: tuple[object, ...], *, other: bool = False) -> list[float]:
    out = [1.0 if value == c else 0.0 for c in choices]
    if other:
        out.append(0.0 if any(out) else 1.0)
    return out


def atom_features(mol: Chem.Mol) -> torch.Tensor:
    """``[n, ATOM_FEATURES]`` float32; ``mol`` must carry explicit hydrogens."""
    bad = sorted({a.GetSymbol() for a in mol.GetAtoms() if a.GetAtomicNum() not in ELEMENTS})
    if bad:
        supported = " ".join(Chem.GetPeriodicTable().GetElementSymbol(z) for z in ELEMENTS)
        raise UnsupportedElementError(f"unsupported element(s) {', '.join(bad)}; supported: {supported}")
    ring_info = mol.GetRingInfo()
    rows = []
    for atom in mol.GetAtoms():
        idx = atom.GetIdx()
        charge = atom.GetFormalCharge()
        rows.append(
            _one_hot(atom.GetAtomicNum(), ELEMENTS)
            + _one_hot(max(-1, min(1, charge)), _CHARGES)
            + [float(atom.GetIsAromatic())]
            + _one_hot(atom.GetHybridization(), _HYBRIDIZATIONS, other=True)
            + [float(atom.IsInRing()), float(ring_info.IsAtomInRingOfSize(idx, 3))]
            + [float(ring_info.IsAtomInRingOfSize(idx, 4))]
            + _one_hot(min(atom.GetTotalNumHs(), 3), (0, 1, 2, 3))
            + _one_hot(min(max(atom.GetDegree(), 1), 4), (1, 2, 3, 4))
            + _one_hot(atom.GetChiralTag(), _CHIRAL_TAGS)
        )
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, ATOM_FEATURES)


def rotatable_bonds(mol: Chem.Mol) -> list[tuple[int, int]]:
    """Rotatable bonds: single, non-ring, not to a triple bond, between two atoms with >= 2 heavy neighbours
    (so methyl, hydroxyl and amine-hydrogen rotations do not count)."""

    def heavy_degree(i: int) -> int:
        return sum(1 for nb in mol.GetAtomWithIdx(i).GetNeighbors() if nb.GetAtomicNum() > 1)

    pairs = {(min(i, j), max(i, j)) for i, j in mol.GetSubstructMatches(_ROTATABLE)}
    return sorted(p for p in pairs if heavy_degree(p[0]) >= 2 and heavy_degree(p[1]) >= 2)


def pair_features(mol: Chem.Mol) -> tuple[torch.Tensor, torch.Tensor]:
    """Fully connected ``edge_index`` ``[2, n(n-1)]`` (ordered pairs ``i != j``) and ``[E, PAIR_FEATURES]``."""
    n = mol.GetNumAtoms()
    dist = np.asarray(Chem.GetDistanceMatrix(mol), dtype=np.int64) if n > 1 else np.zeros((n, n), dtype=np.int64)
    rotatable = set(rotatable_bonds(mol))
    table = np.zeros((n, n, PAIR_FEATURES), dtype=np.float32)
    table[:, :, 0] = 1.0  # "no bond" until a bond says otherwise
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        stereo = bond.GetStereo()
        row = [
            0.0,
            *_one_hot(bond.GetBondType(), _BOND_TYPES),
            float(bond.GetIsConjugated()),
            float(bond.IsInRing()),
            float((min(i, j), max(i, j)) in rotatable),
            float(stereo in _CIS),
            float(stereo in _TRANS),
        ]
        table[i, j, : len(row)] = row
        table[j, i, : len(row)] = row
    hops = np.clip(dist, 1, 4)
    off = PAIR_FEATURES - 4
    for k in range(4):
        table[:, :, off + k] = hops == k + 1
    src, dst = np.nonzero(~np.eye(n, dtype=bool))
    edge_index = torch.from_numpy(np.stack([src, dst])).long()
    edge_attr = torch.from_numpy(table[src, dst])
    return edge_index, edge_attr


def num_rotatable_bonds(mol: Chem.Mol) -> int:
    """RDKit's strict rotatable-bond count (the number the benchmark sets are binned by)."""
    return int(rdMolDescriptors.CalcNumRotatableBonds(mol, rdMolDescriptors.NumRotatableBondsOptions.Strict))
