"""Geometric (variance-exploding) noise schedule of the base process.

The base SDE is ``dX_t = sigma_t dB_t`` with ``X_0 = 0`` and

.. math::

    \\sigma_t = \\sigma_{min} D^{1-t} \\sqrt{2 \\ln D}, \\qquad D = \\sigma_{max}/\\sigma_{min}

    h_t^2 = \\int_0^t \\sigma_s^2 ds = \\sigma_{max}^2 (1 - D^{-2t})

    \\alpha_t^2 = \\int_t^1 \\sigma_s^2 ds = \\sigma_{max}^2 (D^{-2t} - D^{-2})

so that ``h2(t) + alpha2(t) = h2(1)`` and ``d h2/dt = sigma(t)^2`` (ALGORITHM.md section 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["GeometricNoiseSchedule"]


@dataclass(frozen=True, kw_only=True)
class GeometricNoiseSchedule:
    """Geometric noise schedule; ``sigma_min`` and ``sigma_max`` in the units of positions (Å).

    Example:
        >>> s = GeometricNoiseSchedule(sigma_min=1e-3, sigma_max=1.0)
        >>> t = torch.tensor([0.3])
        >>> torch.allclose(s.h2(t) + s.alpha2(t), s.h2(torch.ones(1)))
        True
    """

    sigma_min: float = 1e-3
    sigma_max: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.sigma_min < self.sigma_max:
            raise ValueError(
                f"need 0 < sigma_min < sigma_max, got sigma_min={self.sigma_min}, sigma_max={self.sigma_max}"
            )

    @property
    def log_ratio(self) -> float:
        """``ln D`` with ``D = sigma_max / sigma_min``."""
        return math.log(self.sigma_max / self.sigma_min)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Diffusion coefficient ``sigma_t = sigma_min D^(1-t) sqrt(2 ln D)``."""
        ln_d = self.log_ratio
        return self.sigma_min * torch.exp((1.0 - t) * ln_d) * math.sqrt(2.0 * ln_d)

    def h2(self, t: torch.Tensor) -> torch.Tensor:
        """Base-process variance at time t: ``h_t^2 = sigma_max^2 (1 - D^(-2t))``."""
        return self.sigma_max**2 * -torch.expm1(-2.0 * t * self.log_ratio)

    def alpha2(self, t: torch.Tensor) -> torch.Tensor:
        """Variance still to come: ``alpha_t^2 = sigma_max^2 (D^(-2t) - D^(-2))``."""
        ln_d = self.log_ratio
        return self.sigma_max**2 * (torch.exp(-2.0 * t * ln_d) - math.exp(-2.0 * ln_d))

    def terminal_variance(self) -> float:
        """``h_1^2``: the per-coordinate variance of the base terminal law ``p_1^base``."""
        return self.sigma_max**2 * (1.0 - math.exp(-2.0 * self.log_ratio))
