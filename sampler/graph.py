"""Graph construction in plain torch (no pyg-lib / torch-cluster needed)."""

from __future__ import annotations

import torch

__all__ = ["edges_within_cutoff", "fully_connected_edge_index"]


def fully_connected_edge_index(num_nodes: int, device: torch.device | None = None) -> torch.Tensor:
    """All ordered pairs ``(i, j)`` with ``i != j`` of one graph: ``[2, n (n - 1)]``."""
    idx = torch.arange(num_nodes, device=device)
    src, dst = torch.meshgrid(idx, idx, indexing="ij")
    keep = src != dst
    return torch.stack([src[keep], dst[keep]])


def edges_within_cutoff(positions: torch.Tensor, edge_index: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Boolean mask ``[E]`` of the candidate edges whose length is below ``cutoff``."""
    diff = positions[edge_index[0]] - positions[edge_index[1]]
    return (diff * diff).sum(-1) < cutoff * cutoff
