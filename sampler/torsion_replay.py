"""A batch of terminal torsion samples with their lean-adjoint targets, and its bridge to the replay buffer.

Torsion samples are stored in the existing :class:`sampler.replay.ReplaySamples` as one-column "nodes"
(one row per torsion, ``num_nodes`` = torsions per sample), so every :class:`sampler.replay.ReplayBuffer`
(in memory or in Redis) holds them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sampler.replay import ReplaySamples

__all__ = ["TorsionSamples"]


@dataclass(frozen=True, kw_only=True)
class TorsionSamples:
    """``G`` terminal samples with ``T`` torsions in total.

    Attributes:
        system_ids: ``[G]`` long, the molecule of each sample.
        num_torsions: ``[G]`` long, torsions per sample (may be 0).
        phi: ``[T]`` terminal torsions ``phi_1`` in ``[-pi, pi)`` (radians), sample by sample.
        adjoint: ``[T]`` regression target ``-clip(d g / d phi (phi_1))``.
        energies: ``[G]`` energies of the samples (eV).
        model_version: ``[G]`` long, the training round whose control produced the sample.
    """

    system_ids: torch.Tensor
    num_torsions: torch.Tensor
    phi: torch.Tensor
    adjoint: torch.Tensor
    energies: torch.Tensor
    model_version: torch.Tensor

    def __post_init__(self) -> None:
        g = self.system_ids.shape[0]
        for name in ("num_torsions", "energies", "model_version"):
            if getattr(self, name).shape != (g,):
                raise ValueError(f"{name} must be [G] with one entry per sample ({g})")
        total = int(self.num_torsions.sum()) if g else 0
        for name in ("phi", "adjoint"):
            if getattr(self, name).shape != (total,):
                raise ValueError(f"{name} must be [T] with T = {total} (the sum of num_torsions)")

    @property
    def num_samples(self) -> int:
        return int(self.system_ids.shape[0])

    @property
    def torsion_batch(self) -> torch.Tensor:
        """``[T]`` long: the sample index of each torsion."""
        index = torch.arange(self.num_samples, device=self.num_torsions.device)
        return torch.repeat_interleave(index, self.num_torsions)

    def to_replay(self) -> ReplaySamples:
        """As :class:`ReplaySamples` with one-column positions (``phi``) and adjoint rows."""
        return ReplaySamples(
            system_ids=self.system_ids,
            num_nodes=self.num_torsions,
            positions=self.phi.unsqueeze(-1),
            adjoint=self.adjoint.unsqueeze(-1),
            energies=self.energies,
            model_version=self.model_version,
        )

    @classmethod
    def from_replay(cls, samples: ReplaySamples) -> TorsionSamples:
        """Inverse of :meth:`to_replay`; the replay rows must have exactly one column."""
        if samples.positions.dim() != 2 or samples.positions.shape[-1] != 1:
            raise ValueError(f"torsion replay rows must be [T, 1], got {tuple(samples.positions.shape)}")
        return cls(
            system_ids=samples.system_ids,
            num_torsions=samples.num_nodes,
            phi=samples.positions.squeeze(-1),
            adjoint=samples.adjoint.squeeze(-1),
            energies=samples.energies,
            model_version=samples.model_version,
        )
