"""Stereochemistry a SMILES leaves open: find it, name it, or enumerate the stereoisomers.

A conformer has one configuration at every stereocentre and stereo double bond, so a SMILES that leaves
one unassigned describes several molecules. OMEGA, CONFORGE and Auto3D either refuse such input or
enumerate its stereoisomers; this module provides both halves:

- :func:`find_unassigned_stereo` lists the tetrahedral centres and stereo double bonds (and the rarer
  kinds RDKit knows: cumulenes, atropisomeric bonds, square-planar … centres) whose configuration the
  input does not give, using RDKit's ``FindPotentialStereo`` (the new stereo perception algorithm, which
  also finds interdependent ring stereo such as cis/trans-1,4-dimethylcyclohexane that the legacy
  ``FindMolChiralCenters`` misses). The answer does not depend on RDKit's legacy-perception switch.
- :func:`require_assigned_stereo` raises :class:`UnassignedStereoError`, whose message names the atoms
  (element + 0-based atom index in SMILES order, e.g. ``C3``) and bonds (``C5=C6``).
- :func:`enumerate_stereoisomers` returns the isomeric SMILES of every assignment of the open stereo
  elements (RDKit's ``EnumerateStereoisomers(onlyUnassigned=True)``), capped, in a deterministic order.

Configurations marked explicitly unknown (a wavy bond in a mol block, ``STEREOANY``) count as unassigned.

Example:
    >>> from molecules.smiles import mol_from_smiles
    >>> find_unassigned_stereo(mol_from_smiles("CC(O)CC")).names
    ('C1',)
    >>> enumerate_stereoisomers("CC(O)CC")
    ['CC[C@H](C)O', 'CC[C@@H](C)O']
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

from rdkit import Chem
from rdkit.Chem.EnumerateStereoisomers import (
    EnumerateStereoisomers,
    GetStereoisomerCount,
    StereoEnumerationOptions,
)

from molecules.constants import DEFAULT_MAX_ISOMERS
from molecules.smiles import mol_from_smiles

__all__ = [
    "DEFAULT_MAX_ISOMERS",
    "UnassignedStereo",
    "UnassignedStereoError",
    "count_stereoisomers",
    "enumerate_stereoisomers",
    "find_unassigned_stereo",
    "require_assigned_stereo",
]

log = logging.getLogger(__name__)

_BOND_SYMBOLS = {
    Chem.BondType.SINGLE: "-",
    Chem.BondType.DOUBLE: "=",
    Chem.BondType.TRIPLE: "#",
    Chem.BondType.AROMATIC: ":",
}
_UNASSIGNED = (Chem.StereoSpecified.Unspecified, Chem.StereoSpecified.Unknown)


@dataclass(frozen=True)
class UnassignedStereo:
    """Stereo elements without a configuration.

    Attributes:
        centres: atom indices (0-based, the input's atom order) of unassigned stereocentres.
        bonds: ``(begin, end)`` atom indices of unassigned stereo bonds (double bonds; cumulene and
            atropisomeric bonds too).
        names: a chemist's name for each, centres first: ``"C3"``, ``"C5=C6"``.
    """

    centres: tuple[int, ...]
    bonds: tuple[tuple[int, int], ...]
    names: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.centres or self.bonds)

    def describe(self) -> str:
        """``"2 stereocentres (C1, C4) and 1 double bond (C5=C6)"``-style text."""
        parts = []
        centre_names, bond_names = self.names[: len(self.centres)], self.names[len(self.centres) :]
        if self.centres:
            noun = "stereocentre" if len(self.centres) == 1 else "stereocentres"
            parts.append(f"{len(self.centres)} {noun} ({', '.join(centre_names)})")
        if self.bonds:
            kind = "double bond" if all("=" in name for name in bond_names) else "stereo bond"
            noun = kind if len(self.bonds) == 1 else kind + "s"
            parts.append(f"{len(self.bonds)} {noun} ({', '.join(bond_names)})")
        return " and ".join(parts) or "nothing"


class UnassignedStereoError(ValueError):
    """The input leaves stereochemistry open; ``unassigned`` says where, the message names the atoms."""

    def __init__(self, smiles: str, unassigned: UnassignedStereo) -> None:
        self.smiles = smiles
        self.unassigned = unassigned
        super().__init__(
            f"SMILES {smiles!r} does not specify the configuration of {unassigned.describe()} (atoms numbered "
            "from 0 in SMILES order); a conformer needs one configuration: give it in the SMILES (@/@@ at "
            "centres, / and \\ around double bonds) or enumerate the stereoisomers"
        )


def _atom_name(mol: Chem.Mol, index: int) -> str:
    return f"{mol.GetAtomWithIdx(index).GetSymbol()}{index}"


def find_unassigned_stereo(mol: Chem.Mol) -> UnassignedStereo:
    """The stereocentres and stereo bonds of ``mol`` (from a SMILES or a mol block; hydrogens explicit or
    not) whose configuration is not specified. ``mol`` is not modified."""
    info = Chem.FindPotentialStereo(Chem.Mol(mol), cleanIt=True, flagPossible=True)
    centres: list[int] = []
    bonds: list[tuple[int, int]] = []
    bond_names: list[str] = []
    for item in info:
        if item.specified not in _UNASSIGNED:
            continue
        kind = str(item.type)
        if kind.startswith("Atom_"):
            centres.append(int(item.centeredOn))
        elif kind.startswith("Bond_"):
            bond = mol.GetBondWithIdx(int(item.centeredOn))
            i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
            bonds.append((i, j))
            symbol = _BOND_SYMBOLS.get(bond.GetBondType(), "~")
            bond_names.append(f"{_atom_name(mol, i)}{symbol}{_atom_name(mol, j)}")
        else:  # pragma: no cover (RDKit's StereoType has only Atom_* and Bond_* members today)
            log.warning("stereo element of unknown kind %s on index %d ignored", kind, item.centeredOn)
    names = tuple(_atom_name(mol, i) for i in centres) + tuple(bond_names)
    return UnassignedStereo(centres=tuple(centres), bonds=tuple(bonds), names=names)


def require_assigned_stereo(mol: Chem.Mol, smiles: str | None = None) -> None:
    """Raise :class:`UnassignedStereoError` if ``mol`` leaves a stereocentre or stereo bond open.

    ``smiles`` names the input in the message (default: ``mol``'s own SMILES).
    """
    unassigned = find_unassigned_stereo(mol)
    if unassigned:
        raise UnassignedStereoError(smiles or Chem.MolToSmiles(Chem.RemoveHs(mol)), unassigned)


def _heavy(mol_or_smiles: Chem.Mol | str) -> Chem.Mol:
    if isinstance(mol_or_smiles, str):
        return mol_from_smiles(mol_or_smiles, add_hs=False)
    return Chem.RemoveHs(mol_or_smiles)


def count_stereoisomers(mol_or_smiles: Chem.Mol | str) -> int:
    """``2^n`` for the ``n`` unassigned stereo elements: an upper bound on :func:`enumerate_stereoisomers`'s
    uncapped length (meso forms and symmetric assignments are counted once there)."""
    options = StereoEnumerationOptions(onlyUnassigned=True)
    return int(GetStereoisomerCount(_heavy(mol_or_smiles), options=options))


def enumerate_stereoisomers(
    mol_or_smiles: Chem.Mol | str, *, max_isomers: int = DEFAULT_MAX_ISOMERS, check_embeddable: bool = False
) -> list[str]:
    """Isomeric SMILES of the stereoisomers that assign every open stereo element of the input (specified
    ones are kept); an input with none gives its own SMILES alone.

    Args:
        mol_or_smiles: a molecule or a SMILES (parsed with :func:`molecules.smiles.mol_from_smiles`).
        max_isomers: return at most this many (a warning is logged when the cap cuts the list).
        check_embeddable: drop isomers RDKit's distance geometry cannot embed (e.g. a trans-fused small
            bicycle); slower, one embedding attempt per isomer.

    The order is RDKit's enumeration order (binary counting over the open elements, the first varying
    fastest), deterministic for a given input; duplicates (meso forms) are listed once.
    """
    if max_isomers < 1:
        raise ValueError(f"max_isomers must be at least 1, got {max_isomers}")
    mol = _heavy(mol_or_smiles)
    options = StereoEnumerationOptions(onlyUnassigned=True, unique=True, tryEmbedding=check_embeddable)
    generated = EnumerateStereoisomers(mol, options=options)
    smiles = [Chem.MolToSmiles(isomer) for isomer in itertools.islice(generated, max_isomers)]
    total = count_stereoisomers(mol)
    if len(smiles) == max_isomers and total > max_isomers:
        log.warning(
            "%s: up to %d stereoisomers, returning the first %d (raise max_isomers for more)",
            Chem.MolToSmiles(mol),
            total,
            max_isomers,
        )
    return smiles
