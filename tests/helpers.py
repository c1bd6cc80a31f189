"""Reusable test helpers (equivariance checks in the e3nn style, a tiny conformer checkpoint, a live server, the
environment of a torchrun process)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


def train_tiny_conformer_checkpoint(out: Path) -> Path:
    """A conformer-sampler checkpoint trained in seconds (:func:`benchmarks.service_load.tiny_conformer_config`):
    for tests of the plumbing, never of the chemistry (its conformers often fail the checks)."""
    from benchmarks.service_load import tiny_conformer_config
    from training.conformer_training import train_conformers
    from training.paths import DEFAULT_DATA

    train_conformers(tiny_conformer_config(), data_dir=DEFAULT_DATA, seed=0, out=out, show_progress=False)
    return out


@contextmanager
def live_server(settings: Any, *, timeout_s: float = 60.0) -> Iterator[str]:
    """A real uvicorn server for ``create_app(settings)`` on a free localhost port, in a thread; yields its URL."""
    import uvicorn

    from service.app import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the test server did not start (see the log)")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)


def free_port() -> int:
    """A localhost TCP port free right now (e.g. for a process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun_env(rank: int, port: int, world: int) -> None:
    """The variables torchrun sets for each of ``world`` processes."""
    os.environ.update(
        {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
         "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    )  # fmt: skip
