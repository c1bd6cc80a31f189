"""Reference conformer ensembles (SPICE test, GEOM-DRUGS dev) as RDKit molecules.

Each ensemble becomes one RDKit molecule with the input SMILES's connectivity, explicit hydrogens
in RDKit's ``AddHs(MolFromSmiles(smiles))`` order and the reference conformers attached (ids
``0 … L-1``). Two file conventions (see ``shared/data/README.md``):

- SPICE (``spice/spice_test.txt`` + ``spice/conformers/<hash>.xyz.gz``): atoms already in RDKit
  order; the comment line is the energy in Hartree. The ``max_refs`` lowest-energy frames are kept.
- GEOM-DRUGS (``drugs/drugs_dev.txt`` + ``drugs/conformers/<hash>.xyz.gz``): another atom order and
  no energies. Atoms are mapped by element-labelled graph isomorphism: bonds are perceived from
  interatomic distances (covalent radii × 1.3, RDKit's ``DetermineConnectivity`` rule) and the
  SMILES graph (elements only: no bond orders, charges or aromaticity) is matched into it. The
  first ``max_refs`` frames in file order are kept.

A molecule that cannot be read or mapped is returned as a :class:`ReferenceFailure` with the reason,
never dropped silently.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rdkit import Chem

from molecules.constants import DATASETS
from molecules.smiles import SmilesError, mol_from_smiles
from molecules.structures import with_conformers
from molecules.xyz import XyzFrame, read_xyz

__all__ = [
    "DATASETS",
    "CorpusEntry",
    "ReferenceEnsemble",
    "ReferenceFailure",
    "ReferenceSet",
    "element_graph",
    "load_references",
    "map_atoms",
    "perceive_bonds",
    "read_corpus",
    "read_index",
]

log = logging.getLogger(__name__)

CORPUS_FILE = "geom/DRUGS_test_smiles_corrected.csv"
COVALENT_FACTOR = 1.3  # RDKit DetermineConnectivity's default covFactor
_INDEX_HEADER = ["Rotatable_Bonds", "SMILES"]


@dataclass(frozen=True)
class ReferenceEnsemble:
    """One molecule's reference conformers.

    Attributes:
        name: the file stem (``rot5_1814072a62``).
        smiles: the input SMILES.
        rotatable_bonds: as given in the index file.
        mol: explicit-H RDKit molecule, SMILES connectivity, conformer ids ``0 … L-1`` = references.
        energies_hartree: ``[L]`` energies (SPICE), ascending; ``None`` where the files carry none.
        frames_in_file: frames before the ``max_refs`` cap.
        notes: anything a reader of the results should know (extra close contacts, frames whose
            perceived heavy-atom bonds differ from the SMILES graph, the frame used for mapping).
    """

    name: str
    smiles: str
    rotatable_bonds: int
    mol: Chem.Mol
    energies_hartree: np.ndarray | None
    frames_in_file: int
    notes: tuple[str, ...] = ()

    @property
    def num_conformers(self) -> int:
        return int(self.mol.GetNumConformers())

    @property
    def num_heavy_atoms(self) -> int:
        return int(self.mol.GetNumHeavyAtoms())


@dataclass(frozen=True)
class ReferenceFailure:
    """A molecule of the index that could not be turned into a :class:`ReferenceEnsemble`."""

    name: str
    smiles: str
    reason: str


@dataclass(frozen=True)
class ReferenceSet:
    """All molecules of one dataset: the ensembles read and the failures, in index order."""

    dataset: str
    ensembles: tuple[ReferenceEnsemble, ...]
    failures: tuple[ReferenceFailure, ...]


@dataclass(frozen=True)
class CorpusEntry:
    """One SMILES of the robustness corpus (no reference conformers)."""

    name: str
    smiles: str


@dataclass(frozen=True)
class _IndexRow:
    name: str
    smiles: str
    rotatable_bonds: int


def read_index(path: Path) -> list[_IndexRow]:
    """The TSV index ``Rotatable_Bonds  SMILES  <hash column>``; a malformed line names its number."""
    if not path.is_file():
        raise FileNotFoundError(f"reference index not found: {path} (pass the data directory)")
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t") if lines else []
    if header[:2] != _INDEX_HEADER or len(header) != 3:
        raise ValueError(f"{path}: expected the header 'Rotatable_Bonds<TAB>SMILES<TAB><hash>', got {lines[:1]!r}")
    rows = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise ValueError(f"{path}:{lineno}: expected 3 tab-separated fields, got {len(parts)}")
        try:
            rot = int(parts[0])
        except ValueError:
            raise ValueError(f"{path}:{lineno}: rotatable-bond count {parts[0]!r} is not an integer") from None
        rows.append(_IndexRow(name=parts[2].strip(), smiles=parts[1].strip(), rotatable_bonds=rot))
    return rows


def read_corpus(path: Path) -> list[CorpusEntry]:
    """The GEOM-DRUGS test SMILES (CSV ``smiles,n_conformers,corrected_smiles``); the corrected SMILES
    is used, the entry is named by its row (``geom_0000``)."""
    if not path.is_file():
        raise FileNotFoundError(f"corpus not found: {path} (pass the data directory)")
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "corrected_smiles" not in reader.fieldnames:
            raise ValueError(f"{path}: expected a 'corrected_smiles' column, got {reader.fieldnames}")
        return [CorpusEntry(f"geom_{i:04d}", row["corrected_smiles"].strip()) for i, row in enumerate(reader)]


def perceive_bonds(symbols: Sequence[str], positions: np.ndarray, factor: float = COVALENT_FACTOR) -> np.ndarray:
    """``[n, n]`` bool adjacency: atoms closer than ``factor × (r_cov,i + r_cov,j)`` (RDKit's radii)."""
    table = Chem.GetPeriodicTable()
    radii = np.array([table.GetRcovalent(table.GetAtomicNumber(s)) for s in symbols])
    d = np.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=-1)
    adj = d < factor * (radii[:, None] + radii[None, :])
    np.fill_diagonal(adj, False)
    return adj


def element_graph(symbols: Sequence[str], bonds: Sequence[tuple[int, int]]) -> Chem.Mol:
    """A bare graph: elements and single bonds only (no charges, aromaticity, hydrogens counts),
    for element-labelled matching."""
    rw = Chem.RWMol()
    for s in symbols:
        atom = Chem.Atom(s)
        atom.SetNoImplicit(True)
        rw.AddAtom(atom)
    for i, j in bonds:
        rw.AddBond(int(i), int(j), Chem.BondType.SINGLE)
    mol = rw.GetMol()
    mol.UpdatePropertyCache(strict=False)
    return mol


def _graph_of(mol: Chem.Mol) -> Chem.Mol:
    return element_graph(
        [a.GetSymbol() for a in mol.GetAtoms()], [(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()]
    )


def _bond_pairs(adj: np.ndarray) -> list[tuple[int, int]]:
    i, j = np.nonzero(np.triu(adj))
    return list(zip(i.tolist(), j.tolist(), strict=True))


def map_atoms(mol: Chem.Mol, frame: XyzFrame) -> tuple[int, ...] | None:
    """``order[i]`` = the frame atom that is atom ``i`` of ``mol``, or ``None`` if the SMILES graph
    (elements and bonds) does not embed into the bonds perceived from the frame. Extra perceived
    bonds (close contacts) are allowed; missing ones are not."""
    if len(frame.symbols) != mol.GetNumAtoms():
        return None
    target = element_graph(frame.symbols, _bond_pairs(perceive_bonds(frame.symbols, frame.positions)))
    match = target.GetSubstructMatch(_graph_of(mol), useChirality=False)
    return tuple(match) if match else None


def _heavy_bond_set(mol: Chem.Mol) -> set[tuple[int, int]]:
    heavy = [b for b in mol.GetBonds() if b.GetBeginAtom().GetAtomicNum() > 1 and b.GetEndAtom().GetAtomicNum() > 1]
    return {tuple(sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx()))) for b in heavy}  # type: ignore[misc]


def _changed_bond_frames(mol: Chem.Mol, positions: Sequence[np.ndarray]) -> int:
    """How many frames (already in ``mol``'s atom order) perceive a heavy-atom graph other than the SMILES's."""
    symbols = [a.GetSymbol() for a in mol.GetAtoms()]
    heavy = np.array([a.GetAtomicNum() > 1 for a in mol.GetAtoms()])
    want = _heavy_bond_set(mol)
    changed = 0
    for pos in positions:
        adj = perceive_bonds(symbols, pos) & heavy[:, None] & heavy[None, :]
        if set(_bond_pairs(adj)) != want:
            changed += 1
    return changed


def _spice_energies(frames: list[XyzFrame], path: Path) -> np.ndarray:
    try:
        return np.array([float(f.comment.split()[0]) for f in frames])
    except (ValueError, IndexError):
        raise ValueError(f"{path}: a comment line does not start with an energy in Hartree") from None


def _load_one(dataset: str, row: _IndexRow, folder: Path, max_refs: int) -> ReferenceEnsemble:
    """Raises ``ValueError`` (or ``SmilesError``/``FileNotFoundError``) with the reason on failure."""
    mol = mol_from_smiles(row.smiles)
    path = folder / f"{row.name}.xyz.gz"
    frames = read_xyz(path)
    if not frames:
        raise ValueError(f"{path} holds no frames")
    symbols = [a.GetSymbol() for a in mol.GetAtoms()]
    notes: list[str] = []
    energies: np.ndarray | None = None
    if dataset == "spice_test":
        for k, f in enumerate(frames):
            if list(f.symbols) != symbols:
                raise ValueError(
                    f"frame {k} of {path.name} is not in RDKit AddHs order "
                    f"({len(f.symbols)} atoms {''.join(f.symbols)[:40]}… vs {len(symbols)} from the SMILES)"
                )
        all_energies = _spice_energies(frames, path)
        keep = np.argsort(all_energies, kind="stable")[:max_refs]
        energies = all_energies[keep]
        positions = [frames[k].positions for k in keep]
    else:
        kept = frames[:max_refs]
        order = None
        for k, f in enumerate(kept):
            if sorted(f.symbols) != sorted(symbols):
                raise ValueError(f"frame {k} of {path.name} has other elements than the SMILES")
            order = map_atoms(mol, f)
            if order is not None:
                if k:
                    notes.append(f"mapped on frame {k}: frames 0..{k - 1} lack a bond of the SMILES graph")
                break
        if order is None:
            raise ValueError(
                f"no frame of {path.name} contains the SMILES graph: bonds perceived from distances "
                f"(covalent radii × {COVALENT_FACTOR}) miss at least one SMILES bond in every frame"
            )
        idx = list(order)
        positions = [f.positions[idx] for f in kept]
        contacts = set(_bond_pairs(perceive_bonds(symbols, positions[0]))) - _bond_set_all(mol)
        if contacts:
            names = ", ".join(f"{symbols[i]}{i}–{symbols[j]}{j}" for i, j in sorted(contacts))
            notes.append(f"close contacts perceived as bonds in frame 0, ignored for the mapping: {names}")
    changed = _changed_bond_frames(mol, positions)
    if changed:
        notes.append(f"{changed} of {len(positions)} frames perceive a heavy-atom graph other than the SMILES's")
    return ReferenceEnsemble(
        name=row.name,
        smiles=row.smiles,
        rotatable_bonds=row.rotatable_bonds,
        mol=with_conformers(mol, positions),
        energies_hartree=energies,
        frames_in_file=len(frames),
        notes=tuple(notes),
    )


def _bond_set_all(mol: Chem.Mol) -> set[tuple[int, int]]:
    return {tuple(sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx()))) for b in mol.GetBonds()}  # type: ignore[misc]


def load_references(
    dataset: str, data_dir: Path, *, max_refs: int = 512, names: Sequence[str] | None = None
) -> ReferenceSet:
    """Read a dataset (``spice_test`` or ``drugs_dev``) from ``data_dir``; ``names`` selects molecules
    (in index order). Every molecule that fails is in ``failures`` with the reason."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}")
    if max_refs < 1:
        raise ValueError(f"max_refs must be at least 1, got {max_refs}")
    index_file, folder = DATASETS[dataset]
    rows = read_index(Path(data_dir) / index_file)
    if names is not None:
        unknown = set(names) - {r.name for r in rows}
        if unknown:
            raise ValueError(f"not in {dataset}: {sorted(unknown)}")
        rows = [r for r in rows if r.name in set(names)]
    ensembles: list[ReferenceEnsemble] = []
    failures: list[ReferenceFailure] = []
    for row in rows:
        try:
            ensembles.append(_load_one(dataset, row, Path(data_dir) / folder, max_refs))
        except (SmilesError, ValueError, FileNotFoundError) as exc:
            log.warning("%s %s: %s", dataset, row.name, exc)
            failures.append(ReferenceFailure(row.name, row.smiles, str(exc)))
    return ReferenceSet(dataset, tuple(ensembles), tuple(failures))
