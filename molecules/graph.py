"""A molecule as the sampler sees it: its fixed graph, and what the energy model needs to know."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from rdkit import Chem

from energy.target import SystemChemistry
from molecules.features import atom_features, pair_features
from molecules.structures import spin_multiplicity, total_charge
from sampler.state import SystemGraph

__all__ = ["MAX_ATOMS", "MolecularSystem", "TooManyAtomsError", "check_size", "molecular_system"]

# Fully connected message passing costs O(n^2) per layer; beyond this the sampler refuses politely.
MAX_ATOMS = 200


class TooManyAtomsError(ValueError):
    """The molecule is larger than the sampler supports."""


@dataclass(frozen=True)
class MolecularSystem:
    """One molecule (explicit hydrogens) with its sampler graph and energy-model chemistry."""

    mol: Chem.Mol
    graph: SystemGraph
    chemistry: SystemChemistry

    @property
    def system_id(self) -> int:
        return self.graph.system_id

    @property
    def num_atoms(self) -> int:
        return self.graph.num_nodes


def check_size(mol: Chem.Mol, max_atoms: int = MAX_ATOMS) -> None:
    """Refuse a molecule (explicit hydrogens) with more than ``max_atoms`` atoms, before any work is spent on it.

    Raises:
        TooManyAtomsError: the count and the limit.
    """
    n = mol.GetNumAtoms()
    if n > max_atoms:
        raise TooManyAtomsError(f"{n} atoms (with hydrogens) exceeds the sampler's limit of {max_atoms}")


def molecular_system(mol: Chem.Mol, system_id: int = 0, *, max_atoms: int = MAX_ATOMS) -> MolecularSystem:
    """Build the graph of ``mol`` (which must already carry explicit hydrogens)."""
    check_size(mol, max_atoms)
    n = mol.GetNumAtoms()
    if n < 2:
        raise ValueError("a molecule needs at least two atoms to have a conformation")
    node = atom_features(mol)
    edge_index, edge_attr = pair_features(mol)
    graph = SystemGraph(node_features=node, edge_index=edge_index, edge_features=edge_attr, dim=3, system_id=system_id)
    chemistry = SystemChemistry(
        atomic_numbers=torch.tensor([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=torch.long),
        total_charge=total_charge(mol),
        multiplicity=spin_multiplicity(mol),
        connection_table=Chem.MolToMolBlock(mol),
    )
    return MolecularSystem(mol=Chem.Mol(mol), graph=graph, chemistry=chemistry)
