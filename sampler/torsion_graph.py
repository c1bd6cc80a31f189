"""Index helpers of the torsional control network: the pairs inside each graph of a flat batch.

A batch is the torch-geometric flat layout: ``node_batch [N]`` names the graph of each atom (any order; the
atoms of a graph need not be contiguous) and ``torsion_batch [T]`` the graph of each torsion. Both helpers
enumerate *all* pairs of one graph in a fixed order; callers then keep those within a cutoff. Every result is
a set of pairs that does not depend on how atoms or torsions are numbered, so sums over them are
permutation-invariant.

Example::

    >>> node_batch = torch.tensor([0, 0, 1, 1, 1])
    >>> pairs_within_graphs(node_batch, 2).shape
    torch.Size([2, 8])
"""

from __future__ import annotations

import torch

__all__ = ["cosine_cutoff", "pairs_within_graphs", "torsion_atom_pairs", "torsion_sides"]


def _graph_layout(node_batch: torch.Tensor, num_graphs: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``order`` (atoms sorted by graph, stable), ``counts [G]`` and ``start [G]`` (offsets into ``order``)."""
    order = torch.argsort(node_batch, stable=True)
    counts = torch.bincount(node_batch, minlength=num_graphs)
    start = torch.cumsum(counts, 0) - counts
    return order, counts, start


def pairs_within_graphs(node_batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """All ordered pairs ``(i, j)``, ``i != j``, of atoms in the same graph: ``[2, sum_g n_g (n_g - 1)]``."""
    order, counts, start = _graph_layout(node_batch, num_graphs)
    sizes = counts * counts
    graph = torch.repeat_interleave(torch.arange(num_graphs, device=node_batch.device), sizes)
    k = torch.arange(graph.numel(), device=node_batch.device) - (torch.cumsum(sizes, 0) - sizes)[graph]
    n = counts[graph]
    i, j = start[graph] + k // n, start[graph] + k % n
    keep = i != j
    return torch.stack([order[i[keep]], order[j[keep]]])


def torsion_atom_pairs(torsion_batch: torch.Tensor, node_batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """All pairs ``(torsion, atom)`` with the atom in the torsion's graph: ``[2, sum_tau n_{g(tau)}]``."""
    order, counts, start = _graph_layout(node_batch, num_graphs)
    per_torsion = counts[torsion_batch]
    torsion = torch.repeat_interleave(torch.arange(torsion_batch.numel(), device=node_batch.device), per_torsion)
    k = torch.arange(torsion.numel(), device=node_batch.device) - (torch.cumsum(per_torsion, 0) - per_torsion)[torsion]
    return torch.stack([torsion, order[start[torsion_batch[torsion]] + k]])


def torsion_sides(
    torsion_atoms: torch.Tensor,
    torsion_batch: torch.Tensor,
    edge_index: torch.Tensor,
    node_batch: torch.Tensor,
    num_graphs: int,
) -> torch.Tensor:
    """For each pair of :func:`torsion_atom_pairs` (same order): ``+1`` if the atom is on ``c``'s side of the
    torsion's bond ``b-c`` (reachable from ``c`` over the bonds ``edge_index`` without passing ``b``), else ``-1``.

    For an acyclic bond this is the partition that the torsion rotates (``b``'s side gets ``-1``, ``b``
    included); reversing the torsion flips every sign. Breadth-first from every ``c`` at once, one bond per
    iteration, over the (torsion, bond) pairs of each graph; no gradient.
    """
    device = node_batch.device
    order, counts, start = _graph_layout(node_batch, num_graphs)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=device) - start[node_batch[order]]
    per_torsion = counts[torsion_batch]
    offset = torch.cumsum(per_torsion, 0) - per_torsion
    edge_graph = node_batch[edge_index[0]]
    edge_order = torch.argsort(edge_graph, stable=True)
    edge_counts = torch.bincount(edge_graph, minlength=num_graphs)
    edge_start = torch.cumsum(edge_counts, 0) - edge_counts
    per = edge_counts[torsion_batch]
    tau = torch.repeat_interleave(torch.arange(torsion_atoms.shape[0], device=device), per)
    k = torch.arange(tau.numel(), device=device) - (torch.cumsum(per, 0) - per)[tau]
    src, dst = edge_index[:, edge_order[edge_start[torsion_batch[tau]] + k]]
    b = torsion_atoms[tau, 1]
    open_ = (src != b) & (dst != b)
    src_pair, dst_pair = offset[tau[open_]] + rank[src[open_]], offset[tau[open_]] + rank[dst[open_]]
    reach = torch.zeros(int(per_torsion.sum()), dtype=torch.bool, device=device)
    reach[offset + rank[torsion_atoms[:, 2]]] = True
    while True:
        grown = reach.clone()
        grown[dst_pair[reach[src_pair]]] = True
        if torch.equal(grown, reach):
            return reach.to(torch.long) * 2 - 1
        reach = grown


def cosine_cutoff(distance: torch.Tensor, cutoff: float) -> torch.Tensor:
    """``(1 + cos(pi d / r_c)) / 2`` below the cutoff, 0 beyond: smooth (C^1) at ``r_c``."""
    inside = distance < cutoff
    return torch.where(inside, 0.5 * (torch.cos(torch.pi * distance / cutoff) + 1.0), torch.zeros_like(distance))
