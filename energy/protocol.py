"""The energy-model protocol: a batch of structures in, energies and forces out.

Every adapter (synthetic potentials, GFN2-xTB, MMFF94, fairchem) converts units once, inside itself:
energies leave in eV (reduced units for synthetic systems), forces in eV/Å. A structure the model
cannot evaluate is marked invalid with a reason; the rest of the batch is unaffected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

__all__ = ["EnergyModel", "EnergyResult", "Structures"]


@dataclass(frozen=True, kw_only=True)
class Structures:
    """A ragged batch of ``G`` structures with ``N`` atoms in total.

    Attributes:
        positions: ``[N, d]`` (Å for molecules).
        num_atoms: ``[G]`` long.
        atomic_numbers: ``[N]`` long (0 for the particles of synthetic systems).
        total_charge: ``[G]`` long, in elementary charges.
        multiplicity: ``[G]`` long, spin multiplicity ``2S + 1``.
        connection_tables: optional, one MDL molfile connection table (``Chem.MolToMolBlock``) per
            structure, atoms in the same order as ``positions``; models that need the covalent graph
            (MMFF94, the bond-validity regulariser) read bonds, bond orders and formal charges from it.
            ``None`` for particles or where no model needs it.
    """

    positions: torch.Tensor
    num_atoms: torch.Tensor
    atomic_numbers: torch.Tensor
    total_charge: torch.Tensor
    multiplicity: torch.Tensor
    connection_tables: tuple[str | None, ...] | None = None

    def __post_init__(self) -> None:
        g = self.num_atoms.shape[0]
        n = int(self.num_atoms.sum()) if g else 0
        if self.positions.ndim != 2 or self.positions.shape[0] != n:
            raise ValueError(f"positions must be [{n}, d] (sum of num_atoms), got {tuple(self.positions.shape)}")
        if self.atomic_numbers.shape != (n,):
            raise ValueError(f"atomic_numbers must be [{n}], got {tuple(self.atomic_numbers.shape)}")
        for name in ("total_charge", "multiplicity"):
            if getattr(self, name).shape != (g,):
                raise ValueError(f"{name} must be [{g}], got {tuple(getattr(self, name).shape)}")
        if self.connection_tables is not None and len(self.connection_tables) != g:
            raise ValueError(f"connection_tables must hold {g} entries, got {len(self.connection_tables)}")

    @property
    def num_structures(self) -> int:
        return int(self.num_atoms.shape[0])

    @classmethod
    def concat(cls, parts: Sequence[Structures], *, dtype: torch.dtype = torch.float64) -> Structures:
        """One batch of ``parts``' structures, in order (empty: no structures, ``[0, 3]`` positions of
        ``dtype``). Connection tables are kept where any part has them (``None`` for a part without)."""
        if not parts:
            return cls(
                positions=torch.zeros(0, 3, dtype=dtype),
                num_atoms=torch.zeros(0, dtype=torch.long),
                atomic_numbers=torch.zeros(0, dtype=torch.long),
                total_charge=torch.zeros(0, dtype=torch.long),
                multiplicity=torch.zeros(0, dtype=torch.long),
                connection_tables=(),
            )
        tables = None
        if any(p.connection_tables is not None for p in parts):
            tables = tuple(t for p in parts for t in (p.connection_tables or (None,) * p.num_structures))
        return cls(
            positions=torch.cat([p.positions for p in parts]),
            num_atoms=torch.cat([p.num_atoms for p in parts]),
            atomic_numbers=torch.cat([p.atomic_numbers for p in parts]),
            total_charge=torch.cat([p.total_charge for p in parts]),
            multiplicity=torch.cat([p.multiplicity for p in parts]),
            connection_tables=tables,
        )

    @classmethod
    def uniform(cls, positions: torch.Tensor) -> Structures:
        """Structures of equal size from ``[G, n, d]`` positions (particles, atomic number 0)."""
        g, n, _ = positions.shape
        return cls(
            positions=positions.reshape(g * n, -1),
            num_atoms=torch.full((g,), n, dtype=torch.long),
            atomic_numbers=torch.zeros(g * n, dtype=torch.long),
            total_charge=torch.zeros(g, dtype=torch.long),
            multiplicity=torch.ones(g, dtype=torch.long),
        )


@dataclass(frozen=True, kw_only=True)
class EnergyResult:
    """Energies ``[G]``, forces ``[N, d]`` (``-dE/dx``), validity ``[G]`` with a reason per invalid entry.

    Invalid entries carry ``nan`` energies and zero forces.
    """

    energies: torch.Tensor
    forces: torch.Tensor
    valid: torch.Tensor
    reasons: tuple[str | None, ...]


@runtime_checkable
class EnergyModel(Protocol):
    """Batched energy and forces."""

    @property
    def name(self) -> str: ...

    def evaluate(self, structures: Structures) -> EnergyResult: ...
