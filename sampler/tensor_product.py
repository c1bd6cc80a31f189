"""E(3)-equivariant tensor-product control network (e3nn; gated interaction blocks in the NequIP style).

Node features ``h_i`` are e3nn irreps (scalars ``0e``, vectors ``1o``, optionally pseudo-vectors ``1e`` and
``l = 2`` tensors). Layer ``l``, over the candidate edges (fully connected by default, as in the EGNN), with
``r_ij = x_j - x_i``:

.. math::

    u_{ij} = r_{ij} / \\sqrt{\\|r_{ij}\\|^2 + \\epsilon^2}, \\qquad d_{ij} = \\sqrt{\\|r_{ij}\\|^2 + \\epsilon^2}

    w_{ij} = R\\big(\\sigma(W_e [B(d_{ij}), a_{ij}] + W_s s_i + W_d s_j)\\big)      (invariant radial MLP)

    m_i = \\frac{1}{\\sqrt{\\deg i}} \\sum_j \\mathrm{TP}_{w_{ij}}\\big(W_{in} h_j,\\; Y(u_{ij})\\big)

    h_i \\leftarrow [h_i +]\\; \\mathrm{Gate}\\big(W_{self} h_i + W_{out} m_i\\big)

``B`` is a Gaussian basis on the softened distance (no cutoff: the graph is the candidate edges), ``a_ij`` the
pair features, ``s_i`` the scalar part of ``h_i`` (so the weights see the atom types and ``t``), ``Y`` the
spherical harmonics up to ``lmax`` and TP a channel-wise ("uvu") tensor product whose path weights are
``w_ij``. The residual ``h_i +`` is used when input and output irreps agree (every layer but the first).

Output: one ``1o`` vector per atom (``o3.Linear``), COM removed, times a learned scale. The network is
equivariant to rotations *and* reflections (every irrep carries its parity; the output is a true vector),
translations (only differences of positions enter) and node permutations. When all atoms coincide
(the SDE's start) every ``l >= 1`` harmonic of ``u = 0`` vanishes (they are homogeneous polynomials), so no
vector feature is ever produced and the output is exactly zero; ``epsilon`` keeps ``u``, ``d`` and their
gradients finite there.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn
from torch.nn import functional

from sampler.state import SystemBatch
from sampler.tensor_product_config import TensorProductConfig
from sampler.time_embedding import FourierTime

__all__ = ["TensorProductConfig", "TensorProductControl"]


def _uvu_tensor_product(
    irreps_in: o3.Irreps, irreps_sh: o3.Irreps, irreps_target: o3.Irreps
) -> tuple[o3.TensorProduct, o3.Irreps]:
    """Channel-wise tensor product ``irreps_in x irreps_sh`` restricted to the irreps in ``irreps_target``,
    with external per-edge weights (one per path and channel)."""
    wanted = {ir for _, ir in irreps_target}
    mid: list[tuple[int, o3.Irrep]] = []
    instructions = []
    for i, (mul, ir_in) in enumerate(irreps_in):
        for j, (_, ir_sh) in enumerate(irreps_sh):
            for ir_out in ir_in * ir_sh:
                if ir_out in wanted:
                    instructions.append((i, j, len(mid), "uvu", True))
                    mid.append((mul, ir_out))
    irreps_mid, perm, _ = o3.Irreps(mid).sort()
    instructions = [(i, j, perm[k], mode, train) for i, j, k, mode, train in instructions]
    tp = o3.TensorProduct(irreps_in, irreps_sh, irreps_mid, instructions, internal_weights=False, shared_weights=False)
    return tp, irreps_mid


class _Interaction(nn.Module):
    """One gated interaction block (see the module docstring)."""

    def __init__(
        self, irreps_in: o3.Irreps, irreps_sh: o3.Irreps, config: TensorProductConfig, scalars_in: int, pair_in: int
    ) -> None:
        super().__init__()
        gated = config.gated_irreps()
        self.gate = Gate(
            o3.Irreps(f"{config.scalars}x0e"),
            [functional.silu],
            o3.Irreps(f"{gated.num_irreps}x0e"),
            [torch.sigmoid],
            gated,
        )
        self.irreps_in, self.irreps_out = irreps_in, self.gate.irreps_out
        self.scalars_in = scalars_in
        self.lin_in = o3.Linear(irreps_in, irreps_in)
        self.tp, irreps_mid = _uvu_tensor_product(irreps_in, irreps_sh, self.gate.irreps_in)
        hidden = config.radial_hidden
        self.pair_proj = nn.Linear(pair_in, hidden)
        self.src_proj = nn.Linear(scalars_in, hidden, bias=False)
        self.dst_proj = nn.Linear(scalars_in, hidden, bias=False)
        self.radial = FullyConnectedNet([hidden, hidden, self.tp.weight_numel], functional.silu)
        self.lin_out = o3.Linear(irreps_mid, self.gate.irreps_in)
        self.self_connection = o3.Linear(irreps_in, self.gate.irreps_in)
        self.residual = irreps_in == self.irreps_out

    def forward(
        self,
        h: torch.Tensor,
        edge_index: torch.Tensor,
        sh: torch.Tensor,
        pair: torch.Tensor,
        inv_sqrt_degree: torch.Tensor,
    ) -> torch.Tensor:
        src, dst = edge_index
        s = h[:, : self.scalars_in]  # the 0e block comes first in every layer's irreps
        pre = self.pair_proj(pair) + self.src_proj(s)[src] + self.dst_proj(s)[dst]
        weights = self.radial(functional.silu(pre))
        messages = self.tp(self.lin_in(h)[src], sh, weights)
        agg = torch.zeros(h.shape[0], messages.shape[1], dtype=h.dtype, device=h.device)
        agg = agg.index_add_(0, dst, messages) * inv_sqrt_degree
        out = self.gate(self.self_connection(h) + self.lin_out(agg))
        return h + out if self.residual else out


class TensorProductControl(nn.Module):
    """The control network ``v_theta(t, x) = u_theta(t, x) / sigma_t`` as an e3nn tensor-product network
    (3-D systems only)."""

    def __init__(self, config: TensorProductConfig) -> None:
        super().__init__()
        self.config = config
        self.time = FourierTime(config.time_frequencies)
        t_dim = self.time.dim
        self.centres: torch.Tensor
        self.register_buffer(
            "centres", torch.linspace(0.0, config.radial_max_angstrom, config.radial_basis), persistent=False
        )
        self.width = config.radial_max_angstrom / max(config.radial_basis - 1, 1)
        self.irreps_sh = o3.Irreps.spherical_harmonics(config.lmax)
        self.embed = nn.Linear(config.node_features + t_dim, config.scalars)
        pair_in = config.radial_basis + config.edge_features
        layers = []
        irreps = o3.Irreps(f"{config.scalars}x0e")
        for _ in range(config.num_layers):
            layer = _Interaction(irreps, self.irreps_sh, config, config.scalars, pair_in)
            layers.append(layer)
            irreps = layer.irreps_out
        self.layers = nn.ModuleList(layers)
        self.output = o3.Linear(irreps, o3.Irreps("1x1o"))
        with torch.no_grad():  # start as the base process (zero control), like the EGNN's coordinate heads
            self.output.weight.zero_()
        self.log_scale = nn.Parameter(torch.tensor(math.log(config.output_scale)))

    def forward(self, t: torch.Tensor, batch: SystemBatch) -> torch.Tensor:
        """``t``: ``[G]`` times in [0, 1]; returns ``[N, 3]`` COM-free vectors."""
        x = batch.positions
        if x.shape[1] != 3:
            raise ValueError(f"the tensor-product network needs 3-D positions, got dimension {x.shape[1]}")
        dtype = x.dtype
        time = self.time(t[batch.batch], dtype)
        h = self.embed(torch.cat([batch.node_features.to(dtype), time], dim=-1))
        src, dst = batch.edge_index
        r = x[src] - x[dst]
        soft = torch.sqrt((r * r).sum(-1, keepdim=True) + self.config.softening_angstrom**2)
        sh = o3.spherical_harmonics(self.irreps_sh, r / soft, normalize=False, normalization="component")
        basis = torch.exp(-0.5 * ((soft - self.centres.to(dtype)) / self.width) ** 2)
        pair = torch.cat([basis, batch.edge_features.to(dtype)], dim=-1)
        degree = torch.zeros(x.shape[0], dtype=dtype, device=x.device).index_add_(
            0, dst, torch.ones_like(dst, dtype=dtype)
        )
        inv_sqrt_degree = degree.clamp_min(1.0).rsqrt().unsqueeze(-1)
        for layer in self.layers:
            h = layer(h, batch.edge_index, sh, pair, inv_sqrt_degree)
        out = batch.remove_com(self.output(h))
        return out * self.log_scale.exp()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
