"""Batched systems of different sizes: the state the sampler integrates.

A :class:`SystemGraph` is the fixed description of one system (a molecule or a particle system):
node features, the candidate edges with their features, and the spatial dimension. A
:class:`SystemBatch` stacks many copies of (possibly different) systems with their positions, in
the torch-geometric "one big disconnected graph" layout: ``positions`` is ``[N, d]`` and ``batch``
maps each node to its graph.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sampler.graph import fully_connected_edge_index

__all__ = ["SystemBatch", "SystemGraph", "collate", "graph_mean", "graph_sum", "remove_com"]


@dataclass(frozen=True, kw_only=True)
class SystemGraph:
    """One system's fixed graph.

    Attributes:
        node_features: ``[n, F]`` float features (one-hot element, charges, ...).
        edge_index: ``[2, E]`` candidate edges, local node indices (both directions present).
        edge_features: ``[E, Fe]`` float edge features (bonded flag, bond order, ...).
        dim: spatial dimension (2 for DW-4, 3 for molecules).
        system_id: integer identifier used by the replay buffer and the energy adapters.
    """

    node_features: torch.Tensor
    edge_index: torch.Tensor
    edge_features: torch.Tensor
    dim: int = 3
    system_id: int = 0

    def __post_init__(self) -> None:
        n = self.node_features.shape[0]
        if self.node_features.ndim != 2 or n < 1:
            raise ValueError(f"node_features must be [n >= 1, F], got {tuple(self.node_features.shape)}")
        if self.edge_index.ndim != 2 or self.edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must be [2, E], got {tuple(self.edge_index.shape)}")
        if self.edge_features.shape[0] != self.edge_index.shape[1]:
            raise ValueError("edge_features must have one row per edge")
        if self.edge_index.numel() and int(self.edge_index.max()) >= n:
            raise ValueError("edge_index refers to a node that does not exist")

    @property
    def num_nodes(self) -> int:
        return int(self.node_features.shape[0])

    @classmethod
    def fully_connected(
        cls, node_features: torch.Tensor, *, dim: int, system_id: int = 0, edge_features: torch.Tensor | None = None
    ) -> SystemGraph:
        """A system whose candidate edges are all ordered pairs ``i != j``."""
        n = node_features.shape[0]
        edge_index = fully_connected_edge_index(n, device=node_features.device)
        if edge_features is None:
            edge_features = torch.zeros(edge_index.shape[1], 0, dtype=node_features.dtype)
        return cls(
            node_features=node_features,
            edge_index=edge_index,
            edge_features=edge_features,
            dim=dim,
            system_id=system_id,
        )


@dataclass(frozen=True, kw_only=True)
class SystemBatch:
    """A batch of ``G`` systems with ``N`` nodes in total.

    Attributes:
        positions: ``[N, d]``.
        node_features: ``[N, F]``.
        edge_index: ``[2, E]`` global node indices.
        edge_features: ``[E, Fe]``.
        batch: ``[N]`` graph index of each node, sorted.
        num_nodes: ``[G]`` number of nodes per graph.
        system_ids: ``[G]`` system identifier of each graph.
    """

    positions: torch.Tensor
    node_features: torch.Tensor
    edge_index: torch.Tensor
    edge_features: torch.Tensor
    batch: torch.Tensor
    num_nodes: torch.Tensor
    system_ids: torch.Tensor

    @property
    def num_graphs(self) -> int:
        return int(self.num_nodes.shape[0])

    @property
    def dim(self) -> int:
        return int(self.positions.shape[1])

    @property
    def ptr(self) -> torch.Tensor:
        """``[G + 1]`` offsets of each graph's first node."""
        return torch.cat([self.num_nodes.new_zeros(1), torch.cumsum(self.num_nodes, 0)])

    def replace(self, **changes: torch.Tensor) -> SystemBatch:
        """A copy with some fields replaced (positions, most often)."""
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> SystemBatch:
        """Move to a device; ``dtype`` applies to the float fields."""

        def move(x: torch.Tensor) -> torch.Tensor:
            if dtype is not None and x.is_floating_point():
                return x.to(device=device, dtype=dtype)
            return x.to(device=device)

        return SystemBatch(**{f.name: move(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def graph_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum node values ``[N, ...]`` per graph, giving ``[G, ...]``."""
        return graph_sum(values, self.batch, self.num_graphs)

    def remove_com(self, values: torch.Tensor) -> torch.Tensor:
        """Subtract each graph's mean (unweighted centre) from node vectors ``[N, d]``."""
        return remove_com(values, self.batch, self.num_nodes)


def graph_sum(values: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
    out = values.new_zeros((num_graphs, *values.shape[1:]))
    return out.index_add_(0, batch, values)


def graph_mean(values: torch.Tensor, batch: torch.Tensor, num_nodes: torch.Tensor) -> torch.Tensor:
    """Per-graph mean of node values, ``[G, ...]``."""
    sums = graph_sum(values, batch, int(num_nodes.shape[0]))
    return sums / num_nodes.to(values.dtype).view(-1, *([1] * (values.ndim - 1)))


def remove_com(values: torch.Tensor, batch: torch.Tensor, num_nodes: torch.Tensor) -> torch.Tensor:
    """``x_i - mean_{j in graph(i)} x_j``: the projection onto the centre-of-mass-free subspace."""
    return values - graph_mean(values, batch, num_nodes)[batch]


def collate(graphs: Sequence[SystemGraph], positions: torch.Tensor | None = None) -> SystemBatch:
    """Stack systems into one batch; ``positions`` (``[N, d]``) defaults to all zeros (the SDE start)."""
    if not graphs:
        raise ValueError("cannot collate an empty list of systems")
    dims = {g.dim for g in graphs}
    if len(dims) != 1:
        raise ValueError(f"all systems in a batch must share one spatial dimension, got {sorted(dims)}")
    counts = torch.tensor([g.num_nodes for g in graphs], dtype=torch.long)
    offsets = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)[:-1]])
    node_features = torch.cat([g.node_features for g in graphs])
    edge_index = torch.cat([g.edge_index + int(o) for g, o in zip(graphs, offsets, strict=True)], dim=1)
    edge_features = torch.cat([g.edge_features for g in graphs])
    batch = torch.repeat_interleave(torch.arange(len(graphs)), counts)
    n_total = int(counts.sum())
    dim = dims.pop()
    if positions is None:
        positions = node_features.new_zeros(n_total, dim)
    elif positions.shape != (n_total, dim):
        raise ValueError(f"positions must be [{n_total}, {dim}], got {tuple(positions.shape)}")
    return SystemBatch(
        positions=positions,
        node_features=node_features,
        edge_index=edge_index,
        edge_features=edge_features,
        batch=batch,
        num_nodes=counts,
        system_ids=torch.tensor([g.system_id for g in graphs], dtype=torch.long),
    )
