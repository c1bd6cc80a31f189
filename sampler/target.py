"""What the trainer needs from an energy: the terminal cost's ingredients at a batch of ``X_1``.

``energy/`` adapts its physics models to this protocol, so ``sampler/`` stays free of physics engines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from sampler.state import SystemBatch

__all__ = ["TerminalEvaluation", "TerminalTarget"]


@dataclass(frozen=True, kw_only=True)
class TerminalEvaluation:
    """Energies ``[G]``, ``grad E`` ``[N, d]``, validity ``[G]``; optional extra gradient ``[N, d]``
    (a regulariser, added to the adjoint without division by tau)."""

    energies: torch.Tensor
    energy_gradient: torch.Tensor
    valid: torch.Tensor
    extra_gradient: torch.Tensor | None = None


class TerminalTarget(Protocol):
    """Evaluates the energy (once) at terminal samples."""

    def __call__(self, batch: SystemBatch) -> TerminalEvaluation: ...
