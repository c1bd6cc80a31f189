"""Training molecules: SPICE training SMILES, filtered, with every benchmark molecule held out.

Adjoint Sampling learns from the energy alone, so training needs only SMILES. The filters (elements,
size, rotatable bonds) are part of the training config. Molecules of the evaluation sets (SPICE test,
GEOM-DRUGS dev and the GEOM-DRUGS 1000-molecule test split) are removed by InChIKey connectivity block,
so neither a tautomer-free duplicate nor a stereoisomer of a test molecule is trained on.
"""

from __future__ import annotations

import csv
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rdkit import Chem, rdBase

from molecules.features import ELEMENTS, rotatable_bonds
from molecules.references import read_index

__all__ = ["MoleculeFilter", "TrainingMolecule", "held_out_keys", "load_training_molecules"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class MoleculeFilter:
    """Which training SMILES to keep."""

    max_atoms: int = 60  # with hydrogens
    max_heavy_atoms: int = 30
    max_rotatable_bonds: int = 10
    elements: tuple[int, ...] = ELEMENTS
    allow_charged: bool = True


@dataclass(frozen=True)
class TrainingMolecule:
    smiles: str
    rotatable_bonds: int


def _connectivity_key(mol: Chem.Mol) -> str:
    return str(Chem.MolToInchiKey(mol)).split("-")[0]


def _keys(smiles: Iterable[str]) -> set[str]:
    out = set()
    with rdBase.BlockLogs():
        for s in smiles:
            mol = Chem.MolFromSmiles(s)
            if mol is not None:
                out.add(_connectivity_key(mol))
    return out


def held_out_keys(data_dir: Path) -> set[str]:
    """InChIKey connectivity blocks of every evaluation molecule found under ``data_dir``."""
    smiles: list[str] = []
    for rel in ("spice/spice_test.txt", "drugs/drugs_dev.txt"):
        if (data_dir / rel).is_file():
            smiles += [row.smiles for row in read_index(data_dir / rel)]
    geom = data_dir / "geom" / "DRUGS_test_smiles_corrected.csv"
    if geom.is_file():
        with open(geom, encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                smiles += [row["smiles"], row["corrected_smiles"]]
    if not smiles:
        log.warning("no evaluation sets found under %s: nothing is held out", data_dir)
    return _keys(smiles)


def load_training_molecules(
    path: Path,
    *,
    data_dir: Path,
    selection: MoleculeFilter,
    limit: int | None = None,
    seed: int = 0,
) -> list[TrainingMolecule]:
    """Training molecules from a SPICE-format TSV, filtered, held-out sets removed, shuffled by ``seed``
    and cut to ``limit``."""
    if not path.is_file():
        raise FileNotFoundError(f"training SMILES file not found: {path}")
    held_out = held_out_keys(data_dir)
    rows = [row.smiles for row in read_index(path)]
    random.Random(seed).shuffle(rows)
    kept: list[TrainingMolecule] = []
    dropped = {"unparsable": 0, "held out": 0, "filtered": 0}
    allowed = set(selection.elements)
    with rdBase.BlockLogs():
        for smi in rows:
            mol = Chem.MolFromSmiles(smi)
            if mol is None or len(Chem.GetMolFrags(mol)) != 1:
                dropped["unparsable"] += 1
                continue
            if _connectivity_key(mol) in held_out:
                dropped["held out"] += 1
                continue
            molh = Chem.AddHs(mol)
            charged = any(a.GetFormalCharge() != 0 for a in mol.GetAtoms())
            rot = len(rotatable_bonds(molh))
            if (
                molh.GetNumAtoms() > selection.max_atoms
                or mol.GetNumAtoms() > selection.max_heavy_atoms
                or rot > selection.max_rotatable_bonds
                or any(a.GetAtomicNum() not in allowed for a in molh.GetAtoms())
                or (charged and not selection.allow_charged)
                or any(a.GetNumRadicalElectrons() for a in mol.GetAtoms())
            ):
                dropped["filtered"] += 1
                continue
            kept.append(TrainingMolecule(smi, rot))
            if limit is not None and len(kept) >= limit:
                break
    log.info("training molecules: kept %d; dropped %s", len(kept), dropped)
    return kept
