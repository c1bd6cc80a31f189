"""Metropolis-adjusted Langevin (MALA) on synthetic energies: used to check which energy convention a
set of reference samples is stationary under (ALGORITHM.md section 8)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from energy.synthetic import SyntheticEnergy

__all__ = ["MalaResult", "mala"]


@dataclass(frozen=True)
class MalaResult:
    """``samples`` ``[B, n, d]`` after the run; ``acceptance`` the mean acceptance rate."""

    samples: torch.Tensor
    acceptance: float


def mala(
    energy: SyntheticEnergy,
    x: torch.Tensor,
    *,
    step_size: float,
    num_steps: int,
    tau: float = 1.0,
    generator: torch.Generator | None = None,
) -> MalaResult:
    """Run MALA targeting ``exp(-E / tau)`` from ``x`` ``[B, n, d]``."""

    def log_p_and_grad(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e, f = energy.energy_and_forces(y)
        return -e / tau, f / tau

    logp, grad = log_p_and_grad(x)
    accepted = 0.0
    for _ in range(num_steps):
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        prop = x + step_size * grad + (2 * step_size) ** 0.5 * noise
        logp_p, grad_p = log_p_and_grad(prop)
        fwd = -((prop - x - step_size * grad) ** 2).sum((-2, -1)) / (4 * step_size)
        bwd = -((x - prop - step_size * grad_p) ** 2).sum((-2, -1)) / (4 * step_size)
        log_alpha = logp_p - logp + bwd - fwd
        u = torch.rand(log_alpha.shape, generator=generator, dtype=x.dtype)
        acc = torch.log(u) < log_alpha
        acc = acc & torch.isfinite(logp_p)
        x = torch.where(acc[:, None, None], prop, x)
        logp = torch.where(acc, logp_p, logp)
        grad = torch.where(acc[:, None, None], grad_p, grad)
        accepted += float(acc.float().mean())
    return MalaResult(samples=x, acceptance=accepted / max(num_steps, 1))
