"""Reusable test helpers (equivariance checks in the e3nn style)."""

from __future__ import annotations

import torch

from sampler.state import SystemBatch, SystemGraph, collate


def random_rotation(dim: int, generator: torch.Generator, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A random proper rotation matrix (QR of a Gaussian matrix, determinant fixed to +1)."""
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=dtype))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def particle_batch(
    sizes: list[int], dim: int, generator: torch.Generator, dtype: torch.dtype = torch.float64, node_features: int = 1
) -> SystemBatch:
    graphs = []
    for i, n in enumerate(sizes):
        feats = torch.randn(n, node_features, generator=generator, dtype=dtype)
        edge_feats = torch.randn(n * (n - 1), 2, generator=generator, dtype=dtype)
        graphs.append(SystemGraph.fully_connected(feats, dim=dim, system_id=i, edge_features=edge_feats))
    batch = collate(graphs)
    return batch.replace(positions=torch.randn(batch.positions.shape, generator=generator, dtype=dtype))


def permute_batch(batch: SystemBatch, perm: torch.Tensor) -> SystemBatch:
    """Relabel nodes within graphs: node ``perm[i]`` of the new batch is node ``i`` of the old one."""
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())
    # new position of old node i is perm[i]
    positions = torch.empty_like(batch.positions)
    positions[perm] = batch.positions
    feats = torch.empty_like(batch.node_features)
    feats[perm] = batch.node_features
    return batch.replace(positions=positions, node_features=feats, edge_index=perm[batch.edge_index])


def assert_equivariant(fn, batch: SystemBatch, generator: torch.Generator, atol: float) -> None:  # type: ignore[no-untyped-def]
    """``fn(batch) -> [N, d]`` must rotate with rotations, ignore translations and follow permutations."""
    out = fn(batch)
    d = batch.dim
    rot = random_rotation(d, generator, batch.positions.dtype)
    shift = torch.randn(batch.num_graphs, d, generator=generator, dtype=batch.positions.dtype)[batch.batch]
    moved = batch.replace(positions=batch.positions @ rot.T + shift)
    torch.testing.assert_close(fn(moved), out @ rot.T, atol=atol, rtol=0)
    reflection = torch.eye(d, dtype=batch.positions.dtype)
    reflection[0, 0] = -1
    mirrored = batch.replace(positions=batch.positions @ reflection.T)
    torch.testing.assert_close(fn(mirrored), out @ reflection.T, atol=atol, rtol=0)
    # permutation within each graph
    perm = torch.cat(
        [
            start + torch.randperm(int(n), generator=generator)
            for start, n in zip(batch.ptr[:-1].tolist(), batch.num_nodes.tolist(), strict=True)
        ]
    )
    permuted = permute_batch(batch, perm)
    expected = torch.empty_like(out)
    expected[perm] = out
    torch.testing.assert_close(fn(permuted), expected, atol=atol, rtol=0)
