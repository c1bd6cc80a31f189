"""Fourier features of the diffusion time ``t``, shared by the control networks:
``[sin(pi 2^k t), cos(pi 2^k t)]`` for ``k = 0 .. K-1``, per node."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["FourierTime"]


class FourierTime(nn.Module):
    """``K`` frequencies, ``2K`` features (a non-persistent buffer: not in checkpoints)."""

    def __init__(self, num_frequencies: int) -> None:
        super().__init__()
        self.dim = 2 * num_frequencies
        self.frequencies: torch.Tensor
        self.register_buffer(
            "frequencies", math.pi * 2.0 ** torch.arange(num_frequencies, dtype=torch.float32), persistent=False
        )

    def forward(self, t_per_node: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``t_per_node``: ``[N]`` times; returns ``[N, 2K]`` features in ``dtype``."""
        angles = t_per_node.to(dtype).unsqueeze(-1) * self.frequencies.to(dtype)
        return torch.cat([angles.sin(), angles.cos()], dim=-1)
