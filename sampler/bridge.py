"""Exact Brownian bridge of the base process pinned at ``X_0 = 0`` and ``X_1``.

.. math::

    X_t \\mid X_1 \\sim \\mathcal{N}\\Big(\\frac{h_t^2}{h_1^2} X_1,\\;
        \\frac{h_t^2\\,\\alpha_t^2}{h_1^2} I\\Big),

followed by projection onto the centre-of-mass-free subspace (ALGORITHM.md section 2).
"""

from __future__ import annotations

import torch

from sampler.schedule import GeometricNoiseSchedule
from sampler.state import SystemBatch

__all__ = ["bridge_drift_target", "bridge_sample", "com_free_noise"]


def com_free_noise(batch: SystemBatch, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise ``[N, d]`` projected onto the COM-free subspace of each graph."""
    device = batch.positions.device
    draw_on = generator.device if generator is not None else device  # a CPU generator may drive CUDA tensors
    eps = torch.randn(batch.positions.shape, generator=generator, dtype=batch.positions.dtype, device=draw_on)
    eps = eps.to(device)
    return batch.remove_com(eps)


def bridge_sample(
    schedule: GeometricNoiseSchedule,
    t: torch.Tensor,
    x1: SystemBatch,
    generator: torch.Generator | None = None,
) -> SystemBatch:
    """Draw ``X_t`` from the bridge ``0 -> X_1``; ``t`` is ``[G]`` (one time per graph).

    Example:
        >>> # xt = bridge_sample(schedule, torch.rand(batch.num_graphs), batch)
    """
    if t.shape != (x1.num_graphs,):
        raise ValueError(f"t must have one entry per graph ({x1.num_graphs}), got shape {tuple(t.shape)}")
    h2_t = schedule.h2(t)
    h2_1 = schedule.terminal_variance()
    mean_scale = (h2_t / h2_1)[x1.batch].unsqueeze(-1)
    std = torch.sqrt(h2_t * schedule.alpha2(t) / h2_1).clamp_min(0.0)[x1.batch].unsqueeze(-1)
    x1_free = x1.remove_com(x1.positions)
    xt = mean_scale * x1_free + std * com_free_noise(x1, generator)
    return x1.replace(positions=xt)


def bridge_drift_target(
    schedule: GeometricNoiseSchedule, t: torch.Tensor, xt: SystemBatch, x1: SystemBatch
) -> torch.Tensor:
    """Bridge-matching regression target for ``u / sigma_t``: ``(X_1 - X_t) / alpha_t^2``."""
    alpha2 = schedule.alpha2(t)[xt.batch].unsqueeze(-1)
    return xt.remove_com(x1.positions - xt.positions) / alpha2
