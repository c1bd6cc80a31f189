"""Is a generated conformer the molecule that was asked for?

Two checks on 3D coordinates against the input molecule (explicit hydrogens, same atom order):

- connectivity: bonds perceived from the coordinates (covalent radii, RDKit's ``DetermineConnectivity``)
  must equal the input's bonds, no more and no fewer;
- stereochemistry: every tetrahedral centre and double bond whose configuration the input specifies must
  have that configuration in 3D (unspecified ones may be anything).

An E(3)-equivariant control network cannot tell a molecule from its mirror image, so a conformer whose
tetrahedral centres are all inverted is reflected (``x -> -x``, which keeps distances and double-bond
geometry) when that makes every check pass; anything else that fails is rejected with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdDetermineBonds

from molecules.structures import with_conformers

__all__ = [
    "ConformerCheck",
    "StereoSpec",
    "check_conformer",
    "covalent_bonds_intact",
    "mirror_image",
    "stereo_mismatch",
    "stereo_spec",
]

_MIRROR = np.array([-1.0, 1.0, 1.0])

_DOUBLE_BOND_LABELS = {
    Chem.BondStereo.STEREOE: "E",
    Chem.BondStereo.STEREOTRANS: "E",
    Chem.BondStereo.STEREOZ: "Z",
    Chem.BondStereo.STEREOCIS: "Z",
}


@dataclass(frozen=True)
class StereoSpec:
    """The configurations the input specifies: CIP labels by atom index and by bond index."""

    centres: dict[int, str]
    double_bonds: dict[int, str]


@dataclass(frozen=True)
class ConformerCheck:
    """Outcome for one conformer: ``positions`` are the (possibly reflected) coordinates to return."""

    ok: bool
    positions: np.ndarray
    reflected: bool = False
    reason: str | None = None
    clash: str | None = None  # a steric clash that was allowed (``check_conformer(..., allow_clashes=True)``)


def _labels(mol: Chem.Mol) -> StereoSpec:
    centres = {
        a.GetIdx(): a.GetProp("_CIPCode")
        for a in mol.GetAtoms()
        if a.HasProp("_CIPCode") and a.GetChiralTag() != Chem.ChiralType.CHI_UNSPECIFIED
    }
    bonds = {
        b.GetIdx(): _DOUBLE_BOND_LABELS[b.GetStereo()] for b in mol.GetBonds() if b.GetStereo() in _DOUBLE_BOND_LABELS
    }
    return StereoSpec(centres, bonds)


def stereo_spec(mol: Chem.Mol) -> StereoSpec:
    """The stereo configurations specified in ``mol`` (e.g. from its SMILES)."""
    copy = Chem.Mol(mol)
    Chem.AssignStereochemistry(copy, cleanIt=True, force=True)
    return _labels(copy)


def _bond_set(mol: Chem.Mol) -> set[tuple[int, int]]:
    pairs = ((b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds())
    return {(min(i, j), max(i, j)) for i, j in pairs}


def _connectivity_problem(mol: Chem.Mol, positions: np.ndarray) -> str | None:
    bare = Chem.RWMol()
    for atom in mol.GetAtoms():
        bare.AddAtom(Chem.Atom(atom.GetAtomicNum()))
    perceived = with_conformers(bare.GetMol(), [positions])
    rdDetermineBonds.DetermineConnectivity(perceived, useHueckel=False)
    want, got = _bond_set(mol), _bond_set(perceived)
    if want == got:
        return None
    missing, extra = sorted(want - got), sorted(got - want)
    sym = [a.GetSymbol() for a in mol.GetAtoms()]
    parts = []
    if missing:
        parts.append("missing bonds " + ", ".join(f"{sym[i]}{i}-{sym[j]}{j}" for i, j in missing[:3]))
    if extra:
        parts.append("extra bonds " + ", ".join(f"{sym[i]}{i}-{sym[j]}{j}" for i, j in extra[:3]))
    return "connectivity: " + "; ".join(parts)


_COVALENT_FACTOR = 1.3  # RDKit DetermineConnectivity's default covFactor


def covalent_bonds_intact(mol: Chem.Mol, positions: np.ndarray) -> bool:
    """Every bond of ``mol`` no longer than ``1.3 (r_cov,i + r_cov,j)``, the length below which
    :func:`rdDetermineBonds.DetermineConnectivity` perceives a bond."""
    table = Chem.GetPeriodicTable()
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        limit = _COVALENT_FACTOR * (
            table.GetRcovalent(b.GetBeginAtom().GetAtomicNum()) + table.GetRcovalent(b.GetEndAtom().GetAtomicNum())
        )
        if float(np.linalg.norm(positions[i] - positions[j])) > limit:
            return False
    return True


def stereo_mismatch(mol: Chem.Mol, positions: np.ndarray, spec: StereoSpec) -> tuple[list[int], list[int]]:
    """Centres and double bonds whose 3D configuration differs from ``spec``."""
    if not spec.centres and not spec.double_bonds:
        return [], []
    copy = with_conformers(mol, [positions])
    Chem.AssignStereochemistryFrom3D(copy)
    got = _labels(copy)
    bad_centres = [i for i, label in spec.centres.items() if got.centres.get(i) != label]
    bad_bonds = [i for i, label in spec.double_bonds.items() if got.double_bonds.get(i) != label]
    return bad_centres, bad_bonds


def mirror_image(positions: np.ndarray) -> np.ndarray:
    """``x -> -x``: every distance and E/Z kept, every tetrahedral centre inverted."""
    return positions * _MIRROR


def check_conformer(
    mol: Chem.Mol, positions: np.ndarray, spec: StereoSpec | None = None, *, allow_clashes: bool = False
) -> ConformerCheck:
    """Check ``positions`` ``[n, 3]`` against ``mol``; reflect a mirror image when that fixes it.

    A perceived bond graph that differs only because non-bonded atoms come within bonding distance (every
    covalent bond intact) is a steric clash: rejected by default, passed with ``clash`` set when
    ``allow_clashes`` (models whose bonds cannot break, such as the torsional one, report clashes instead).
    """
    positions = np.asarray(positions, dtype=np.float64)
    if positions.shape != (mol.GetNumAtoms(), 3):
        return ConformerCheck(False, positions, reason=f"positions shape {positions.shape} does not match the molecule")
    if not np.isfinite(positions).all():
        return ConformerCheck(False, positions, reason="non-finite coordinates")
    problem = _connectivity_problem(mol, positions)
    clash = None
    if problem is not None:
        if not (allow_clashes and covalent_bonds_intact(mol, positions)):
            return ConformerCheck(False, positions, reason=problem)
        clash = "steric clash: " + problem.removeprefix("connectivity: ")
    spec = stereo_spec(mol) if spec is None else spec
    bad_centres, bad_bonds = stereo_mismatch(mol, positions, spec)
    if not bad_centres and not bad_bonds:
        return ConformerCheck(True, positions, clash=clash)
    if bad_centres and not bad_bonds and len(bad_centres) == len(spec.centres):
        mirrored = mirror_image(positions)
        if stereo_mismatch(mol, mirrored, spec) == ([], []):
            return ConformerCheck(True, mirrored, reflected=True)
    parts = []
    if bad_centres:
        parts.append(f"{len(bad_centres)} of {len(spec.centres)} stereocentres inverted (atoms {bad_centres[:5]})")
    if bad_bonds:
        parts.append(f"{len(bad_bonds)} of {len(spec.double_bonds)} double bonds with the wrong E/Z")
    return ConformerCheck(False, positions, reason="stereo: " + "; ".join(parts))
