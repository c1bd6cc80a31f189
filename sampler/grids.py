"""Time grids ``0 = t_0 < t_1 < ... < t_n = 1`` for the SDE integrators.

Strategies are small objects (no string flags), each returning a 1-D tensor of ``n + 1`` times.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

__all__ = ["QuadraticLinearGrid", "TimeGrid", "UniformGrid"]


class TimeGrid(Protocol):
    """A time grid with ``num_steps`` intervals on ``[0, 1]``."""

    @property
    def num_steps(self) -> int: ...

    def times(self, *, dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
        """Return the ``num_steps + 1`` grid points, increasing, from 0 to 1."""
        ...


def _check_steps(num_steps: int) -> None:
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")


@dataclass(frozen=True, kw_only=True)
class UniformGrid:
    """``t_k = k / n``."""

    num_steps: int

    def __post_init__(self) -> None:
        _check_steps(self.num_steps)

    def times(self, *, dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
        return torch.linspace(0.0, 1.0, self.num_steps + 1, dtype=dtype, device=device)


@dataclass(frozen=True, kw_only=True)
class QuadraticLinearGrid:
    """Quadratic spacing up to ``t_switch``, then uniform spacing to 1.

    The first ``round(quadratic_fraction * n)`` steps cover ``[0, t_switch]`` with
    ``t = t_switch (k / m)^2`` (fine steps early, where ``sigma_t`` is largest), the remaining steps
    are uniform on ``[t_switch, 1]``.
    """

    num_steps: int
    t_switch: float = 0.25
    quadratic_fraction: float = 0.5

    def __post_init__(self) -> None:
        _check_steps(self.num_steps)
        if not 0.0 < self.t_switch < 1.0:
            raise ValueError(f"t_switch must lie in (0, 1), got {self.t_switch}")
        if not 0.0 < self.quadratic_fraction < 1.0:
            raise ValueError(f"quadratic_fraction must lie in (0, 1), got {self.quadratic_fraction}")

    def times(self, *, dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
        m = min(max(round(self.quadratic_fraction * self.num_steps), 1), self.num_steps - 1)
        if self.num_steps == 1:
            return torch.tensor([0.0, 1.0], dtype=dtype, device=device)
        k = torch.arange(m + 1, dtype=torch.float64) / m
        quad = self.t_switch * k**2
        lin = torch.linspace(self.t_switch, 1.0, self.num_steps - m + 1, dtype=torch.float64)[1:]
        return torch.cat([quad, lin]).to(dtype=dtype, device=device)
