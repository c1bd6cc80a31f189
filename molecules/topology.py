"""Covalent topology for molecules that arrive without it (XYZ frames); conformer files -> Structures.

Bonds, bond orders and formal charges are perceived from 3D coordinates with RDKit's
``rdDetermineBonds.DetermineBonds`` (connectivity from covalent radii, then bond orders that make the
formal charges sum to the molecule's total charge). Perception needs the total charge; it fails with a
clear :class:`BondPerceptionError` when no bond order assignment matches it (a wrong charge, a broken
geometry) — nothing is silently fixed.

Example::

    >>> import numpy as np
    >>> mol = molecule_from_xyz(("O", "H", "H"), np.array([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0.0]]))
    >>> mol.GetNumBonds()
    2
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rdkit import Chem, rdBase
from rdkit.Chem import rdDetermineBonds
from rdkit.Geometry import Point3D

from energy.protocol import Structures
from molecules.sdf import read_sdf
from molecules.structures import conformer_structures, total_charge
from molecules.xyz import XyzFrame, read_xyz

__all__ = [
    "BondPerceptionError",
    "ConformerFile",
    "atoms_molecule",
    "conformer_format",
    "molecule_from_xyz",
    "molecules_structures",
    "perceive_bonds",
    "perceive_frames",
    "read_conformers",
]


class BondPerceptionError(ValueError):
    """Bonds could not be perceived from the coordinates (the message says why)."""


def atoms_molecule(symbols: Sequence[str], positions: np.ndarray) -> Chem.Mol:
    """A molecule of unbonded atoms with one 3D conformer; unknown symbols and bad shapes are errors.

    Raises:
        ValueError: unknown element symbol, positions not ``[n, 3]``, or non-finite coordinates.
    """
    positions = np.asarray(positions, dtype=np.float64)
    if positions.shape != (len(symbols), 3):
        raise ValueError(f"positions must be [{len(symbols)}, 3], got {positions.shape}")
    bad = np.flatnonzero(~np.isfinite(positions).all(-1))
    if bad.size:
        raise ValueError(f"non-finite coordinates on {bad.size} atoms, first atom {int(bad[0])}")
    table = Chem.GetPeriodicTable()
    rw = Chem.RWMol()
    for i, symbol in enumerate(symbols):
        try:
            z = table.GetAtomicNumber(symbol)
        except RuntimeError:
            z = 0
        if z <= 0:
            raise ValueError(f"atom {i}: unknown element symbol {symbol!r}")
        rw.AddAtom(Chem.Atom(z))
    conf = Chem.Conformer(len(symbols))
    for i, (x, y, z) in enumerate(positions):
        conf.SetAtomPosition(i, Point3D(float(x), float(y), float(z)))
    conf.Set3D(True)
    rw.AddConformer(conf, assignId=True)
    return rw.GetMol()


def perceive_bonds(atoms: Chem.Mol, *, charge: int = 0, max_iterations: int = 1_000_000) -> Chem.Mol:
    """A copy of ``atoms`` (explicit hydrogens, one 3D conformer) with bonds, bond orders, formal charges.

    Args:
        atoms: e.g. from :func:`atoms_molecule`; existing bonds are disregarded.
        charge: the molecule's total charge; the formal charges found sum to it.
        max_iterations: bound on RDKit's bond-order search (large conjugated systems can be slow).

    Raises:
        BondPerceptionError: no bond orders fit ``charge`` (a wrong charge or a broken geometry).
    """
    mol = Chem.Mol(atoms)
    blocker = rdBase.BlockLogs()  # the reason travels in the exception, not on stderr
    try:
        rdDetermineBonds.DetermineBonds(mol, charge=int(charge), maxIterations=max_iterations)
    except (ValueError, RuntimeError) as exc:
        raise BondPerceptionError(f"bond perception failed with total charge {charge}: {exc}") from None
    finally:
        del blocker
    return mol


def molecule_from_xyz(symbols: Sequence[str], positions: np.ndarray, *, charge: int = 0) -> Chem.Mol:
    """:func:`atoms_molecule` then :func:`perceive_bonds` (raises ``ValueError`` / ``BondPerceptionError``)."""
    return perceive_bonds(atoms_molecule(symbols, positions), charge=charge)


def molecules_structures(mols: Sequence[Chem.Mol], *, dtype: torch.dtype = torch.float64) -> Structures:
    """One structure per conformer of each molecule, in order, each with its own connection table."""
    return Structures.concat([conformer_structures(m, dtype=dtype) for m in mols], dtype=dtype)


@dataclass(frozen=True)
class ConformerFile:
    """Conformers read from a file, one structure per record or frame.

    ``molecules[k]`` holds structure ``k``'s atoms (and bonds, unless perception failed: ``problems[k]``
    says why, and that structure has no connection table, the given charge and the lowest multiplicity
    its electron count allows). ``names[k]``: the SDF title or the XYZ comment line.
    """

    structures: Structures
    molecules: tuple[Chem.Mol, ...]
    names: tuple[str, ...]
    problems: tuple[str | None, ...]


def perceive_frames(
    frames: Sequence[XyzFrame], *, charge: int = 0, dtype: torch.dtype = torch.float64
) -> ConformerFile:
    """Perceive bonds frame by frame; one frame failing perception does not stop the others.

    Raises:
        ValueError: a frame with an unknown element or non-finite coordinates (naming the frame).
    """
    mols: list[Chem.Mol] = []
    problems: list[str | None] = []
    parts: list[Structures] = []
    for k, frame in enumerate(frames):
        try:
            mol = atoms_molecule(frame.symbols, frame.positions)
        except ValueError as exc:
            raise ValueError(f"frame {k}: {exc}") from None
        try:
            mol = perceive_bonds(mol, charge=charge)
        except BondPerceptionError as exc:
            problems.append(str(exc))
            z = torch.tensor([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=torch.long)
            electrons = int(z.sum()) - charge
            parts.append(
                Structures(
                    positions=torch.as_tensor(frame.positions, dtype=dtype),
                    num_atoms=torch.tensor([len(frame.symbols)]),
                    atomic_numbers=z,
                    total_charge=torch.tensor([charge]),
                    multiplicity=torch.tensor([1 + electrons % 2]),
                    connection_tables=(None,),
                )
            )
        else:
            problems.append(None)
            parts.append(conformer_structures(mol, dtype=dtype))
        mols.append(mol)
    names = tuple(f.comment.strip() for f in frames)
    return ConformerFile(Structures.concat(parts, dtype=dtype), tuple(mols), names, tuple(problems))


def conformer_format(path: str | Path) -> str:
    """``"sdf"`` or ``"xyz"`` from the file name (``.gz`` allowed); anything else is a ``ValueError``."""
    name = Path(path).name.lower().removesuffix(".gz")
    for fmt in ("sdf", "xyz"):
        if name.endswith("." + fmt):
            return fmt
    raise ValueError(f"{path}: unknown conformer file type; use .sdf or .xyz (optionally .gz)")


def read_conformers(path: str | Path, *, charge: int | None = None) -> ConformerFile:
    """Every conformer of an SDF (topology from the file) or an XYZ file (bonds perceived).

    Args:
        charge: total charge of XYZ molecules (default 0). For an SDF the formal charges decide; a
            ``charge`` that disagrees with a record's is an error.

    Raises:
        FileNotFoundError: no such file.
        ValueError: an unknown file type, an unreadable record or frame (named), a charge mismatch.
    """
    fmt = conformer_format(path)
    if fmt == "xyz":
        frames = read_xyz(path)
        if not frames:
            raise ValueError(f"{path}: no frames (an empty XYZ file)")
        return perceive_frames(frames, charge=0 if charge is None else charge)
    mols = read_sdf(path)
    for k, mol in enumerate(mols, 1):
        formal = total_charge(mol)
        if charge is not None and formal != charge:
            raise ValueError(
                f"{path}: record {k} has formal charges summing to {formal}, but the charge given is {charge}"
            )
    names = tuple(m.GetProp("_Name") if m.HasProp("_Name") else "" for m in mols)
    return ConformerFile(molecules_structures(mols), tuple(mols), names, (None,) * len(mols))
