"""Data-parallel gradient steps over several processes (``torchrun``; gloo on CPU, NCCL on GPUs).

Every rank holds the same control network; each draws its own minibatch from the shared replay buffer;
the gradients are averaged across ranks *during* backward (a post-accumulate hook per parameter), so
clipping and the Adam step see the average and the parameters stay identical on every rank. With equal
per-rank batches this equals one process stepping on the concatenated batch:

.. math::

    \\nabla \\tfrac{1}{R} \\sum_r L_r(\\theta) = \\tfrac{1}{R} \\sum_r \\nabla L_r(\\theta).

``torchrun --nproc-per-node 2 -m cli.main worker train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :meth:`DistributedContext.from_env` reads them.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = [
    "DistributedContext",
    "any_rank",
    "broadcast_parameters",
    "gather_objects",
    "init_process_group",
    "install_gradient_averaging",
    "parameter_digest",
    "process_group",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    """This process's place among ``world_size`` training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, count: int) -> int:
        """This rank's part of ``count`` items split as evenly as possible."""
        return count // self.world_size + (1 if self.rank < count % self.world_size else 0)

    def device(self) -> torch.device:
        """``cuda:LOCAL_RANK`` where CUDA is available, else the CPU."""
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    @classmethod
    def from_env(cls) -> DistributedContext:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
        if not 0 <= rank < world:
            raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world}")
        return cls(rank=rank, world_size=world, local_rank=local)


def init_process_group(ctx: DistributedContext, backend: str | None = None) -> None:
    """Join the process group (``env://`` rendezvous); gloo unless CUDA is used (then NCCL)."""
    if not ctx.is_distributed or dist.is_initialized():
        return
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(ctx.local_rank)
    dist.init_process_group(backend=backend, rank=ctx.rank, world_size=ctx.world_size)
    log.info("rank %d of %d joined the process group (%s)", ctx.rank, ctx.world_size, backend)


@contextmanager
def process_group(ctx: DistributedContext, backend: str | None = None) -> Iterator[None]:
    """Belong to the process group for the block, then leave it together with the other ranks.

    On a normal exit every rank first waits at a barrier (no rank tears down its connections while
    another is still talking to it), then destroys the group while the interpreter is fully alive. A
    gloo group left to the interpreter's shutdown is torn down by C++ destructors while its threads may
    still run, which can abort a rank that finished its work (SIGABRT, "terminate called without an
    active exception"), and ``torchrun`` then reports the whole run as failed. After an exception the
    barrier is skipped (the other ranks may never reach it) and the group is destroyed all the same.
    One process (``world_size`` 1) joins nothing and leaves nothing.
    """
    init_process_group(ctx, backend)
    finished = False
    try:
        yield
        finished = True
    finally:
        if ctx.is_distributed and dist.is_initialized():
            if finished:
                dist.barrier()
            dist.destroy_process_group()
            log.info("rank %d of %d left the process group", ctx.rank, ctx.world_size)


def broadcast_parameters(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank."""
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=src)


def install_gradient_averaging(module: nn.Module) -> list[RemovableHandle]:
    """Average each parameter's gradient over all ranks as soon as backward has accumulated it.

    All ranks must run the same graph (same parameters receive gradients, in the same order): true for
    the control networks here, whose every parameter takes part in every forward pass.
    """
    world = dist.get_world_size()

    def hook(param: torch.Tensor) -> None:
        assert param.grad is not None
        dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
        param.grad.div_(world)

    return [p.register_post_accumulate_grad_hook(hook) for p in module.parameters() if p.requires_grad]


def any_rank(flag: bool, ctx: DistributedContext) -> bool:
    """``True`` on every rank if ``flag`` is set on any (e.g. a stop request seen by one rank)."""
    if not ctx.is_distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        t = t.to(ctx.device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_objects(obj: Any, ctx: DistributedContext) -> list[Any]:
    """Every rank's ``obj``, in rank order (on every rank)."""
    if not ctx.is_distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def parameter_digest(module: nn.Module) -> str:
    """SHA-256 of the parameters' bytes: equal digests mean bit-identical parameters."""
    h = hashlib.sha256()
    for p in module.parameters():
        h.update(p.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()
