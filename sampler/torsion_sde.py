"""Euler–Maruyama on the torus for the controlled torsional SDE (ALGORITHM.md section 6b).

.. math::

    d\\phi_t = \\sigma_t^2\\, v_\\theta(t, \\phi_t)\\, dt + \\sigma_t\\, dB_t \\ (\\text{wrapped}), \\qquad \\phi_0 = 0,

where ``v = u / sigma_t`` is the control's output per torsion. One step, at the left end of each interval:
``phi <- wrap(phi + sigma_t^2 v dt + sigma_t sqrt(dt) eps)``, i.e. ``wrap(phi + sigma_t u dt + sigma_t
sqrt(dt) eps)``. All samples of a batch are integrated together on the flat layout ``phi [T]``,
``torsion_batch [T]``, ``t [G]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from sampler.grids import TimeGrid
from sampler.schedule import GeometricNoiseSchedule
from sampler.torus import wrap

__all__ = [
    "TorsionControl",
    "TorusEulerMaruyama",
    "TorusVarianceMatchedEuler",
    "latin_hypercube",
    "stratified_normal",
    "zero_torsion_control",
]


class TorsionControl(Protocol):
    """``control(t [G], phi [T]) -> v [T]``: the control's output ``u / sigma_t`` per torsion.

    The molecule-specific information (which sample each torsion belongs to, the molecular graph, the seed
    conformer) is closed over by the caller, e.g. with :func:`functools.partial` or a small module.
    """

    def __call__(self, t: torch.Tensor, phi: torch.Tensor) -> torch.Tensor: ...


def zero_torsion_control(t: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """The base process (no control)."""
    return torch.zeros_like(phi)


def latin_hypercube(num_samples: int, per_sample: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """``[num_samples * per_sample]`` float64 in ``[0, 1)``, sample-major: for each of the ``per_sample``
    coordinates the ``num_samples`` values lie one in each of ``num_samples`` equal slices, in random order, placed
    at random within it. Each sample's values are still independent uniforms; the set is spread evenly."""
    if num_samples < 1 or per_sample < 0:
        raise ValueError(f"need num_samples >= 1 and per_sample >= 0, got {num_samples}, {per_sample}")
    ranks = torch.argsort(torch.rand(per_sample, num_samples, generator=generator, dtype=torch.float64), dim=1)
    u = ranks.to(torch.float64) + torch.rand(per_sample, num_samples, generator=generator, dtype=torch.float64)
    return (u / num_samples).T.reshape(-1)


def stratified_normal(
    num_samples: int, per_sample: int, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``[num_samples * per_sample]`` standard normal draws, sample-major, stratified across the samples: the
    normal quantiles of a :func:`latin_hypercube` (one draw in each equal-probability slice per coordinate).

    Each sample's draws are still exactly ``N(0, I)`` and independent of each other; only the set over the samples
    is spread evenly (negatively correlated), as in stratified Monte Carlo.
    """
    u = latin_hypercube(num_samples, per_sample, generator=generator).clamp(1e-300, 1.0 - 2.0**-53)
    return torch.special.ndtri(u).to(dtype)


@dataclass(frozen=True, kw_only=True)
class TorusEulerMaruyama:
    """Euler–Maruyama on the torus with ``sigma_t^2 dt`` and ``sigma_t sqrt(dt)`` at the left end of each step.

    Its base terminal variance (before wrapping) is the left Riemann sum ``sum_k sigma_k^2 dt_k``, above
    ``h_1^2``; with ``h_1 ~ pi`` the wrapped law hardly notices (its first Fourier coefficient is
    ``exp(-h_1^2 / 2) ~ 7e-3``). :class:`TorusVarianceMatchedEuler` removes that bias.

    Example:
        >>> # phi1 = TorusEulerMaruyama(schedule=torsion_schedule(), grid=UniformGrid(num_steps=100)).sample(
        >>> #     control, torsion_batch, num_samples, generator=g)
    """

    schedule: GeometricNoiseSchedule
    grid: TimeGrid

    def increments(self, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
        """Variance added by the base process over ``[t0, t1]`` as this integrator approximates it."""
        return self.schedule.sigma(t0) ** 2 * (t1 - t0)

    def sample(
        self,
        control: TorsionControl,
        torsion_batch: torch.Tensor,
        num_samples: int,
        *,
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
        callback: Callable[[int, torch.Tensor], None] | None = None,
        stratified: bool = False,
    ) -> torch.Tensor:
        """Integrate ``num_samples`` samples (``torsion_batch [T]`` long names each torsion's sample) from
        ``phi_0 = 0`` to ``t = 1``; returns ``phi_1 [T]`` in ``[-pi, pi)``, on ``torsion_batch``'s device.

        Runs under ``torch.no_grad`` (not inference mode, so that the result can later require gradients,
        e.g. for the energy's vector–Jacobian product). ``callback(k, phi)`` sees the state after step ``k``.
        ``stratified``: every step's noise is :func:`stratified_normal` across the samples (which must then be
        copies of one system: sample-major, the same number of torsions each); each sample's law is unchanged.
        """
        if torsion_batch.dim() != 1:
            raise ValueError(f"torsion_batch must be [T], got shape {tuple(torsion_batch.shape)}")
        if torsion_batch.numel() and not 0 <= int(torsion_batch.min()) <= int(torsion_batch.max()) < num_samples:
            raise ValueError(f"torsion_batch must index samples 0 .. {num_samples - 1}")
        per_sample = torsion_batch.numel() // num_samples
        if stratified and not torch.equal(
            torsion_batch.cpu(), torch.arange(num_samples).repeat_interleave(per_sample).to(torsion_batch.dtype)
        ):
            raise ValueError("stratified noise needs copies of one system: sample-major, equal torsion counts")
        device = torsion_batch.device
        times = self.grid.times(dtype=dtype, device=device)
        phi = torch.zeros(torsion_batch.shape, dtype=dtype, device=device)
        draw_on = generator.device if generator is not None else device
        with torch.no_grad():
            for k in range(self.grid.num_steps):
                t = times[k]
                var = self.increments(t, times[k + 1])
                v = control(t.expand(num_samples), phi)
                if v.shape != phi.shape:
                    raise ValueError(f"control returned shape {tuple(v.shape)}, expected {tuple(phi.shape)}")
                if stratified:
                    eps = stratified_normal(num_samples, per_sample, generator=generator, dtype=dtype).to(device)
                else:
                    eps = torch.randn(phi.shape, generator=generator, dtype=dtype, device=draw_on).to(device)
                phi = wrap(phi + var * v + torch.sqrt(var) * eps)
                if callback is not None:
                    callback(k + 1, phi)
        return phi


@dataclass(frozen=True, kw_only=True)
class TorusVarianceMatchedEuler(TorusEulerMaruyama):
    """Euler step whose ``sigma_t^2 dt`` is the exact ``h^2(t_{k+1}) - h^2(t_k)``: the base process is then
    integrated exactly on any grid (terminal law ``WN(0, h_1^2)``)."""

    def increments(self, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
        return self.schedule.h2(t1) - self.schedule.h2(t0)
