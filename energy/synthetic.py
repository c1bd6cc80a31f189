"""Synthetic particle energies with exact reference samples: DW-4 and LJ-13 (ALGORITHM.md section 8).

LJ convention. The reference samples in ``shared/data/synthetic/LJ13_*.npy`` (from DEM, after Klein et
al.) follow the convention with each pair counted TWICE (a sum over ordered pairs ``i != j``),
``eps = 1, r_m = 1``:

.. math::

    E(x) = \\sum_{i \\ne j} \\epsilon \\big[(r_m/d_{ij})^{12} - 2 (r_m/d_{ij})^6\\big]
           + \\tfrac12 \\sum_i \\|x_i - \\bar x\\|^2 ,\\qquad \\tau = 1 .

This was established by running MALA (2000 steps of size 1e-4 from 500 reference samples) under the
three candidate conventions, pair sum over unordered pairs times 1/2, 1 and 2: the mean energy moved
from -3.9 to +7.4 (x 1/2) and from -16.9 to -5.9 (x 1), and stayed put, -42.9 to -43.2 (x 2). The check is a test
(``tests/test_synthetic_energy.py``) and a command (``adjoint-sampling energy --check-convention``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from energy.protocol import EnergyResult, Structures

__all__ = ["DoubleWell", "LennardJones", "SyntheticEnergy", "pairwise_distances"]


def pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """Distances of the unordered pairs ``i < j`` of ``[B, n, d]`` positions: ``[B, n (n - 1) / 2]``."""
    n = x.shape[-2]
    i, j = torch.triu_indices(n, n, offset=1, device=x.device)
    diff = x[..., i, :] - x[..., j, :]
    return torch.sqrt((diff * diff).sum(-1))


@dataclass(frozen=True, kw_only=True)
class SyntheticEnergy:
    """Base for energies of identical particles in equal-size systems; subclasses define ``energy``."""

    num_particles: int
    dim: int
    name: str = "synthetic"

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, n, d] -> [B]``."""
        raise NotImplementedError

    def energy_and_forces(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Energies ``[B]`` and forces ``-dE/dx`` ``[B, n, d]`` by autograd."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            e = self.energy(x)
            (grad,) = torch.autograd.grad(e.sum(), x)
        return e.detach(), -grad

    def evaluate(self, structures: Structures) -> EnergyResult:
        if structures.num_structures and not bool((structures.num_atoms == self.num_particles).all()):
            raise ValueError(f"{self.name} expects {self.num_particles} particles in every structure")
        if structures.positions.shape[1] != self.dim:
            raise ValueError(f"{self.name} expects {self.dim}-D positions, got {structures.positions.shape[1]}-D")
        x = structures.positions.reshape(-1, self.num_particles, self.dim)
        finite = torch.isfinite(x).flatten(1).all(-1)
        e, f = self.energy_and_forces(torch.where(finite[:, None, None], x, torch.zeros_like(x)))
        valid = finite & torch.isfinite(e) & torch.isfinite(f).flatten(1).all(-1)
        e = torch.where(valid, e, torch.full_like(e, float("nan")))
        f = torch.where(valid[:, None, None], f, torch.zeros_like(f))
        reasons = tuple(None if ok else "non-finite coordinates or energy" for ok in valid.tolist())
        return EnergyResult(energies=e, forces=f.reshape(-1, self.dim), valid=valid, reasons=reasons)


@dataclass(frozen=True, kw_only=True)
class DoubleWell(SyntheticEnergy):
    """DW-4: ``E = sum_{i<j} a (d_ij - d0)^4 + b (d_ij - d0)^2`` with ``a = 0.9, b = -4, d0 = 4``."""

    num_particles: int = 4
    dim: int = 2
    a: float = 0.9
    b: float = -4.0
    d0: float = 4.0
    name: str = "dw4"

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        r = pairwise_distances(x) - self.d0
        return (self.a * r**4 + self.b * r**2).sum(-1)


@dataclass(frozen=True, kw_only=True)
class LennardJones(SyntheticEnergy):
    """LJ-n with a harmonic restraint: ``pair_factor * sum_{i<j} eps[(rm/d)^12 - 2 (rm/d)^6] + 0.5 k sum |x - xbar|^2``.

    ``pair_factor = 2`` (each pair counted twice) is the convention of the shared reference samples
    (module docstring).
    """

    num_particles: int = 13
    dim: int = 3
    eps: float = 1.0
    rm: float = 1.0
    oscillator_k: float = 1.0
    pair_factor: float = 2.0
    name: str = "lj13"

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        d = pairwise_distances(x)
        s6 = (self.rm / d) ** 6
        lj = (self.eps * (s6 * s6 - 2.0 * s6)).sum(-1) * self.pair_factor
        centred = x - x.mean(-2, keepdim=True)
        return lj + 0.5 * self.oscillator_k * (centred * centred).sum((-2, -1))
