"""Training losses for torsions: Reciprocal Adjoint Matching and bridge matching on the torus.

The same conventions as the Cartesian :mod:`sampler.loss`: the control outputs ``v = u / sigma_t`` per
torsion, and RAM regresses ``v(t, phi_t)`` onto the lean adjoint target ``-clip(grad g(phi_1))`` with
``phi_t`` drawn from the torus bridge (:func:`sampler.torus.torus_bridge_sample`) pinned at a buffer
sample:

.. math::

    \\mathcal{L}(\\theta) = \\mathbb{E}\\,( v_\\theta(t, \\phi_t) + \\mathrm{clip}(\\partial_\\phi g(\\phi_1)) )^2,
    \\qquad \\partial_\\phi g = \\frac{\\partial_\\phi E}{\\tau} + \\partial_\\phi \\log WN(\\phi_1; 0, h_1^2),

averaged over torsions. ``g = E / tau + log p_1^base`` is the terminal cost whose optimal control has
terminal law ``∝ p_1^base exp(-g) = exp(-E / tau)`` (ALGORITHM.md section 3; the Cartesian code uses the
same sign, ``-X_1 / h_1^2 = grad log p_1^base``; section 6b's ``grad[-log p_1^base]`` has the sign flipped, which
would target ``p_1^base(phi)^2 exp(-E / tau)``). ``clip`` clamps each component to
``[-max_grad, max_grad]`` (published: 200). Bridge matching (warm-up from data torsions) regresses ``v``
onto the drift of the torus bridge, :func:`sampler.torus.torus_bridge_drift_target`.
"""

from __future__ import annotations

import torch

from sampler.loss import LossResult
from sampler.torsion_sde import TorsionControl
from sampler.torus import TorusBase, torus_bridge_drift_target, torus_bridge_sample

__all__ = [
    "DEFAULT_TORSION_MAX_GRAD",
    "clip_per_torsion",
    "flat_bottom_scale",
    "torsion_adjoint_target",
    "torsion_bridge_matching_loss",
    "torsion_ram_loss",
]

DEFAULT_TORSION_MAX_GRAD = 200.0
"""Published per-component clip of ``d g / d phi`` (1 / radian)."""


def clip_per_torsion(values: torch.Tensor, max_grad: float) -> torch.Tensor:
    """Clamp each component to ``[-max_grad, max_grad]``."""
    if max_grad <= 0.0:
        raise ValueError(f"max_grad must be > 0, got {max_grad}")
    return values.clamp(-max_grad, max_grad)


def torsion_adjoint_target(
    phi1: torch.Tensor,
    grad_phi_energy: torch.Tensor,
    *,
    tau: float,
    base: TorusBase,
    max_grad: float = DEFAULT_TORSION_MAX_GRAD,
    extra_gradient: torch.Tensor | None = None,
) -> torch.Tensor:
    """``-clip(dg/dphi)`` per torsion, ``[T]``, with ``dg/dphi = dE/dphi / tau + d/dphi log WN(phi_1; 0, h_1^2)``.

    ``grad_phi_energy`` is ``dE/dphi`` at ``phi1`` (the vector–Jacobian product ``J^T grad_x E``, in energy
    units per radian) and ``tau`` the temperature in the same energy units. ``extra_gradient`` (a
    regulariser, not divided by ``tau``) is clipped separately and added.
    """
    if tau <= 0.0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if grad_phi_energy.shape != phi1.shape:
        raise ValueError(f"grad_phi_energy must match phi1 ({tuple(phi1.shape)}), got {tuple(grad_phi_energy.shape)}")
    grad_g = grad_phi_energy / tau + base.terminal_score(phi1)
    target = -clip_per_torsion(grad_g, max_grad)
    if extra_gradient is not None:
        target = target - clip_per_torsion(extra_gradient, max_grad)
    return target


def flat_bottom_scale(energies: torch.Tensor, ceiling: torch.Tensor, tau: float) -> torch.Tensor:
    """``dF/dE = sigmoid((E - c) / tau)`` of the flat-bottomed energy ``F(E) = tau softplus((E - c) / tau)``.

    Targeting ``exp(-F / tau)`` instead of ``exp(-E / tau)`` leaves every state below the ceiling ``c`` at one
    density (uniform on the torus: the random-torsion control's breadth) and keeps the Boltzmann law at ``tau``
    above it (``F -> E - c``), so the sampler learns only where not to go. Multiplying ``dE/dphi`` of each
    sample by this scale gives ``dF/dphi`` for :func:`torsion_adjoint_target`."""
    if tau <= 0.0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if energies.shape != ceiling.shape:
        raise ValueError(f"ceiling must match energies ({tuple(energies.shape)}), got {tuple(ceiling.shape)}")
    return torch.sigmoid((energies - ceiling) / tau)


def _draw_times(num_samples: int, like: torch.Tensor, generator: torch.Generator | None, t_max: float) -> torch.Tensor:
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    draw_on = generator.device if generator is not None else like.device
    u = torch.rand(num_samples, generator=generator, dtype=like.dtype, device=draw_on)
    return u.to(like.device) * t_max


def torsion_ram_loss(
    control: TorsionControl,
    phi1: torch.Tensor,
    target: torch.Tensor,
    torsion_batch: torch.Tensor,
    num_samples: int,
    *,
    base: TorusBase,
    generator: torch.Generator | None = None,
    t_max: float = 1.0,
) -> LossResult:
    """RAM loss for buffer samples ``phi1 [T]`` with precomputed targets ``target [T]``
    (:func:`torsion_adjoint_target`); one time per sample, ``t [num_samples]``."""
    if target.shape != phi1.shape:
        raise ValueError(f"target must match phi1 ({tuple(phi1.shape)}), got {tuple(target.shape)}")
    t = _draw_times(num_samples, phi1, generator, t_max)
    bridge = torus_bridge_sample(base, t, phi1, torsion_batch, generator)
    v = control(t, bridge.phi_t)
    return LossResult(loss=((v - target) ** 2).mean(), t=t)


def torsion_bridge_matching_loss(
    control: TorsionControl,
    phi1: torch.Tensor,
    torsion_batch: torch.Tensor,
    num_samples: int,
    *,
    base: TorusBase,
    generator: torch.Generator | None = None,
    t_max: float = 0.99,
    normalized: bool = False,
) -> LossResult:
    """Bridge-matching loss on data torsions ``phi1 [T]`` (warm-up): regress ``v`` onto the torus bridge drift.

    ``t`` is drawn on ``[0, t_max)`` (the target grows like ``1 / alpha_t`` as ``t -> 1``).
    ``normalized=True`` weights each torsion's squared error by ``alpha_t^2 / alpha_0^2`` (same minimiser,
    late times no longer dominate), as in :func:`sampler.loss.bridge_matching_loss`.
    """
    t = _draw_times(num_samples, phi1, generator, t_max)
    bridge = torus_bridge_sample(base, t, phi1, torsion_batch, generator)
    target = torus_bridge_drift_target(base, t, bridge.phi_t, phi1, torsion_batch)
    v = control(t, bridge.phi_t)
    per_torsion = (v - target) ** 2
    if normalized:
        weight = base.schedule.alpha2(t) / base.schedule.alpha2(torch.zeros_like(t))
        per_torsion = per_torsion * weight[torsion_batch]
    return LossResult(loss=per_torsion.mean(), t=t)
