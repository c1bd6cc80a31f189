"""The replay-buffer protocol the trainer needs; `buffer/` implements it (in memory and in Redis).

A buffer holds terminal samples ``X_1`` of the controlled process together with the lean adjoint
target computed once from one energy evaluation. Samples are ragged (systems of different sizes), so
a batch of samples is stored as concatenated node rows plus per-graph counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["ReplayBuffer", "ReplaySamples"]


@dataclass(frozen=True, kw_only=True)
class ReplaySamples:
    """A batch of ``G`` buffer entries with ``N`` nodes in total.

    Attributes:
        system_ids: ``[G]`` long, which system (molecule) each entry belongs to.
        num_nodes: ``[G]`` long.
        positions: ``[N, d]`` terminal positions ``X_1``.
        adjoint: ``[N, d]`` regression target ``-clip(grad g(X_1))``.
        energies: ``[G]`` energies of ``X_1`` (eV, or reduced units for synthetic systems).
        model_version: ``[G]`` long, the training round whose control produced the entry.
    """

    system_ids: torch.Tensor
    num_nodes: torch.Tensor
    positions: torch.Tensor
    adjoint: torch.Tensor
    energies: torch.Tensor
    model_version: torch.Tensor

    def __post_init__(self) -> None:
        g = self.system_ids.shape[0]
        n = int(self.num_nodes.sum()) if g else 0
        for name in ("num_nodes", "energies", "model_version"):
            if getattr(self, name).shape[0] != g:
                raise ValueError(f"{name} must have one entry per sample ({g})")
        for name in ("positions", "adjoint"):
            if getattr(self, name).shape[0] != n:
                raise ValueError(f"{name} must have {n} rows (sum of num_nodes)")
        if not torch.isfinite(self.positions).all() or not torch.isfinite(self.adjoint).all():
            raise ValueError("replay samples must have finite positions and adjoint targets")

    @property
    def num_graphs(self) -> int:
        return int(self.system_ids.shape[0])

    def split(self) -> list[ReplaySamples]:
        """One ``ReplaySamples`` per entry."""
        counts = self.num_nodes.tolist()
        pos = torch.split(self.positions, counts)
        adj = torch.split(self.adjoint, counts)
        return [
            ReplaySamples(
                system_ids=self.system_ids[i : i + 1],
                num_nodes=self.num_nodes[i : i + 1],
                positions=pos[i],
                adjoint=adj[i],
                energies=self.energies[i : i + 1],
                model_version=self.model_version[i : i + 1],
            )
            for i in range(self.num_graphs)
        ]

    @staticmethod
    def concat(parts: list[ReplaySamples]) -> ReplaySamples:
        if not parts:
            raise ValueError("nothing to concatenate")
        return ReplaySamples(
            system_ids=torch.cat([p.system_ids for p in parts]),
            num_nodes=torch.cat([p.num_nodes for p in parts]),
            positions=torch.cat([p.positions for p in parts]),
            adjoint=torch.cat([p.adjoint for p in parts]),
            energies=torch.cat([p.energies for p in parts]),
            model_version=torch.cat([p.model_version for p in parts]),
        )


@runtime_checkable
class ReplayBuffer(Protocol):
    """FIFO replay buffer of :class:`ReplaySamples` entries with a fixed capacity (in entries)."""

    capacity: int

    def push(self, samples: ReplaySamples) -> None:
        """Append entries, evicting the oldest beyond ``capacity``."""
        ...

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> ReplaySamples:
        """Draw ``num_samples`` entries uniformly at random (with replacement)."""
        ...

    def __len__(self) -> int: ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to restore the buffer exactly."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
