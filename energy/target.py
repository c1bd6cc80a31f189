"""Adapter from an :class:`~energy.protocol.EnergyModel` to the sampler's terminal-cost protocol."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from energy.protocol import EnergyModel, Structures
from sampler.state import SystemBatch
from sampler.target import TerminalEvaluation

if TYPE_CHECKING:  # the regulariser imports RDKit; particle systems never need it
    from energy.regulariser import BondValidityRegulariser

__all__ = ["EnergyTarget", "SystemChemistry"]


@dataclass(frozen=True, kw_only=True)
class SystemChemistry:
    """What an energy model needs to know about a system beyond positions."""

    atomic_numbers: torch.Tensor
    total_charge: int = 0
    multiplicity: int = 1
    connection_table: str | None = None


@dataclass(frozen=True, kw_only=True)
class EnergyTarget:
    """Calls ``model`` on a sampler batch; systems missing from ``chemistry`` are particles (Z = 0).

    With a ``regulariser`` (molecules with connection tables), its gradient travels as the evaluation's
    ``extra_gradient``: added to the RAM target without division by tau, clipped separately.
    """

    model: EnergyModel
    chemistry: Mapping[int, SystemChemistry] = field(default_factory=dict)
    regulariser: BondValidityRegulariser | None = None

    def structures(self, batch: SystemBatch) -> Structures:
        ids = batch.system_ids.tolist()
        counts = batch.num_nodes.tolist()
        z, q, m = [], [], []
        tables: list[str | None] = []
        for sid, n in zip(ids, counts, strict=True):
            chem = self.chemistry.get(sid)
            z.append(chem.atomic_numbers if chem is not None else torch.zeros(n, dtype=torch.long))
            q.append(chem.total_charge if chem is not None else 0)
            m.append(chem.multiplicity if chem is not None else 1)
            tables.append(chem.connection_table if chem is not None else None)
        return Structures(
            positions=batch.positions.detach(),
            num_atoms=batch.num_nodes,
            atomic_numbers=torch.cat(z),
            total_charge=torch.tensor(q, dtype=torch.long),
            multiplicity=torch.tensor(m, dtype=torch.long),
            connection_tables=tuple(tables) if any(t is not None for t in tables) else None,
        )

    def __call__(self, batch: SystemBatch) -> TerminalEvaluation:
        structures = self.structures(batch)
        result = self.model.evaluate(structures)
        extra = None
        if self.regulariser is not None:
            extra = self.regulariser.evaluate(structures).gradient.to(batch.positions.dtype)
        return TerminalEvaluation(
            energies=result.energies.to(batch.positions.dtype),
            energy_gradient=-result.forces.to(batch.positions.dtype),
            valid=result.valid,
            extra_gradient=extra,
        )
