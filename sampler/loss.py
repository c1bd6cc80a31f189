"""Training losses: Reciprocal Adjoint Matching (RAM) and bridge matching (ALGORITHM.md section 4).

The control network outputs ``v = u / sigma_t``. RAM regresses ``v(t, X_t)`` onto the lean adjoint
target ``-clip(grad g(X_1))`` with ``X_t`` drawn from the base bridge pinned at a buffer sample:

.. math::

    \\mathcal{L}(\\theta) = \\mathbb{E}\\,\\| v_\\theta(t, X_t) + \\mathrm{clip}(\\nabla g(X_1)) \\|^2,
    \\qquad \\nabla g(x) = \\nabla E(x)/\\tau - x / h_1^2,

summed over coordinates, averaged over atoms. Bridge matching (warm-up from data) regresses ``v`` onto
``(X_1 - X_t) / alpha_t^2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sampler.bridge import bridge_drift_target, bridge_sample
from sampler.schedule import GeometricNoiseSchedule
from sampler.sde import Control
from sampler.state import SystemBatch

__all__ = [
    "LossResult",
    "adjoint_target",
    "bridge_matching_loss",
    "clip_per_particle",
    "reciprocal_adjoint_matching_loss",
]


@dataclass(frozen=True)
class LossResult:
    """``loss``: scalar; ``t``: ``[G]`` the times drawn."""

    loss: torch.Tensor
    t: torch.Tensor


def clip_per_particle(vectors: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Rescale each row (one particle's vector) of ``[N, d]`` to norm at most ``max_norm``."""
    norms = vectors.norm(dim=-1, keepdim=True)
    scale = torch.clamp(max_norm / norms.clamp_min(1e-30), max=1.0)
    return vectors * scale


def adjoint_target(
    batch: SystemBatch,
    energy_gradient: torch.Tensor,
    *,
    schedule: GeometricNoiseSchedule,
    tau: float,
    max_grad_norm: float,
    extra_gradient: torch.Tensor | None = None,
) -> torch.Tensor:
    """``-clip(grad g(X_1))``, COM-free, with ``grad g = grad E / tau - X_1 / h_1^2``.

    ``extra_gradient`` (e.g. a bond-validity regulariser, not divided by tau) is clipped separately
    and added.
    """
    x1 = batch.positions
    grad_g = energy_gradient / tau - x1 / schedule.terminal_variance()
    target = -clip_per_particle(grad_g, max_grad_norm)
    if extra_gradient is not None:
        target = target - clip_per_particle(extra_gradient, max_grad_norm)
    return batch.remove_com(target)


def _draw_times(num_graphs: int, like: torch.Tensor, generator: torch.Generator | None, t_max: float) -> torch.Tensor:
    draw_on = generator.device if generator is not None else like.device
    u = torch.rand(num_graphs, generator=generator, dtype=like.dtype, device=draw_on)
    return u.to(like.device) * t_max


def reciprocal_adjoint_matching_loss(
    control: Control,
    x1: SystemBatch,
    target: torch.Tensor,
    *,
    schedule: GeometricNoiseSchedule,
    generator: torch.Generator | None = None,
    t_max: float = 1.0,
) -> LossResult:
    """RAM loss for buffer samples ``x1`` with precomputed lean-adjoint targets ``target`` ``[N, d]``."""
    t = _draw_times(x1.num_graphs, x1.positions, generator, t_max)
    xt = bridge_sample(schedule, t, x1, generator)
    v = control(t, xt)
    per_node = ((v - target) ** 2).sum(-1)
    return LossResult(loss=per_node.mean(), t=t)


def bridge_matching_loss(
    control: Control,
    x1: SystemBatch,
    *,
    schedule: GeometricNoiseSchedule,
    generator: torch.Generator | None = None,
    t_max: float = 0.99,
    normalized: bool = False,
) -> LossResult:
    """Bridge-matching loss on data ``x1`` (warm-up): regress ``v`` onto ``(X_1 - X_t) / alpha_t^2``.

    ``t`` is drawn on ``[0, t_max)``: the target diverges as ``t -> 1`` (its size is ``~1/alpha_t``).
    ``normalized=True`` weights each graph's squared error by ``alpha_t^2 / alpha_0^2``, i.e. regresses
    ``alpha_t v`` onto the unit-scale ``(X_1 - X_t) / alpha_t``: the same minimizer, but late times no
    longer dominate the loss by orders of magnitude (with ``sigma_max / sigma_min = 1000`` the
    unweighted loss spans six decades over ``t``).
    """
    t = _draw_times(x1.num_graphs, x1.positions, generator, t_max)
    xt = bridge_sample(schedule, t, x1, generator)
    target = bridge_drift_target(schedule, t, xt, x1.replace(positions=x1.remove_com(x1.positions)))
    v = control(t, xt)
    per_node = ((v - target) ** 2).sum(-1)
    if normalized:
        weight = schedule.alpha2(t) / schedule.alpha2(torch.zeros_like(t))
        per_node = per_node * weight[xt.batch]
    return LossResult(loss=per_node.mean(), t=t)
