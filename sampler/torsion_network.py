"""Control network of the torsional sampler (ALGORITHM.md section 6b): one scalar ``v = u / sigma_t`` per torsion.

Two stages, in plain torch.

1. **Invariant message passing** (EGNN-style, no coordinate updates) over the covalent bonds (with their
   features) and over every pair of atoms closer than ``cutoff_angstrom`` (Gaussian distance basis times a
   cosine envelope, so the messages vanish smoothly at the cutoff):

   .. math::

       h_i \\leftarrow h_i + \\phi_h\\Big(h_i,\\ \\sum_{j \\in \\mathcal{B}(i)} \\phi_b(h_i, h_j, a_{ij}, B(d_{ij}))
           + \\sum_{d_{ij} < r_c} f_c(d_{ij})\\, \\phi_s(h_i, h_j, B(d_{ij}))\\Big)

2. **Bond-centred harmonic head.** For torsion ``a-b-c-d`` (rotation about ``b-c``), with midpoint ``m``, unit
   axis ``e = (x_c - x_b) / |x_c - x_b|`` and the atoms ``i`` within ``head_cutoff_angstrom`` of ``m``: axial
   coordinate ``z_i = (x_i - m) . e``, perpendicular part ``u_i``, side ``s_i = +1`` if ``i`` is on ``c``'s side
   of the bond (reachable from ``c`` without passing ``b``), else ``-1``, and in any right-handed frame
   ``(p_1, p_2, e)`` the complex number ``zeta_i = (u_i . p_1 + i u_i . p_2) / sqrt(|u_i|^2 + eps^2)``. With
   invariant weights ``alpha_i = W(h_i, h_b, h_c, z_i, s_i, |x_i - m|, |u_i|)`` and the weights of the *reversed*
   torsion ``beta_i = W(h_i, h_c, h_b, -z_i, -s_i, ...)`` (same network ``W``), per channel ``c`` and harmonic
   ``k``:

   .. math::

       A_{ck} = \\sum_i f_c(|x_i - m|)\\, \\alpha_{ick}\\, \\zeta_i^k, \\qquad
       B_{ck} = \\sum_i f_c(|x_i - m|)\\, \\beta_{ick}\\, \\zeta_i^k,

       v = s \\sum_{c,k} \\gamma_{ck}\\big(h_b + h_c,\\ h_b \\odot h_c,\\ t,\\ \\mathrm{Re}\\,\\bar A B,\\
           |A|^2 + |B|^2\\big)\\ \\mathrm{Im}\\big(\\bar A_{ck} B_{ck}\\big)

   ``Im(conj(A) B) = sum_ij alpha_i beta_j sin(k (theta_j - theta_i))``: the k-fold harmonics of the generalized
   dihedrals ``i-b-c-j`` (k = 3 carries an sp3-sp3 barrier, k = 2 an sp2 one), which a distance-only network
   cannot see; the side lets ``alpha`` pick ``b``'s side and ``beta`` ``c``'s, the pairs whose relative
   rotation the torsion is (the torque of a pair force between the sides has exactly this form). Rotating the
   frame in the plane multiplies every ``zeta^k`` by one phase, so ``conj(A) B`` does not depend on it (the
   code takes ``p_1`` from the coordinate axis least aligned with ``e``).

Symmetries (all exact; tested in ``tests/test_torsion_network.py``):

- rotations and translations: invariant; **reflections flip the sign** (``Im(conj(A) B)`` is a pseudoscalar,
  everything else is built from distances), as the derivative of an energy with respect to a dihedral must;
- renumbering atoms: invariant; renumbering torsions permutes the outputs (one row per torsion, in the order of
  ``torsion_atoms``, never in some internal bond order);
- reversing a torsion (``d-c-b-a``, the same dihedral): the same output, since ``e -> -e`` conjugates every
  ``zeta``, flips ``z`` and ``s`` and so swaps the roles of ``alpha`` and ``beta``;
- the output does not depend on which outer atoms ``a``, ``d`` name the torsion (only ``b``, ``c`` enter).

The last layer of ``gamma`` starts at zero, so a fresh network is the base process (zero control).

Stored as a dict, a config carries ``"kind": "torsion"``. Example::

    >>> config = TorsionControlConfig(node_features=4, edge_features=2)
    >>> torsion_network_from_dict(torsion_network_to_dict(config)) == config
    True
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sampler.time_embedding import FourierTime
from sampler.torsion_graph import cosine_cutoff, pairs_within_graphs, torsion_atom_pairs, torsion_sides

__all__ = [
    "TORSION_NETWORK_KIND",
    "GraphIndex",
    "TorsionControlConfig",
    "TorsionControlNetwork",
    "build_torsion_control",
    "describe_torsion_network",
    "graph_index",
    "torsion_network_from_dict",
    "torsion_network_to_dict",
]

#: the ``kind`` tag of a stored torsion-network config (see :mod:`sampler.networks`)
TORSION_NETWORK_KIND = "torsion"


@dataclass(frozen=True, kw_only=True)
class TorsionControlConfig:
    """Torsion control-network hyper-parameters.

    Attributes:
        node_features: width of the atom features.
        edge_features: width of the covalent-bond features.
        num_layers, hidden: depth and width of the invariant message passing (width 32 fitted the benchmark's
            target better than 64, at half the cost).
        radial_basis: number of Gaussians on a distance (centres 0 .. the cutoff).
        cutoff_angstrom: radius of the through-space message graph.
        head_cutoff_angstrom: atoms within this distance of a torsion's bond midpoint enter its head (12 Å: at
            5 Å the head misses the torque of contacts far from the bond; ``benchmarks/torsion_network.py``).
        harmonics: ``K``: the head uses the angular harmonics ``k = 1 .. K`` about the bond.
        head_channels: channels ``C`` per harmonic in the head.
        softening_angstrom: ``eps`` of ``zeta``: atoms on (or near) the bond axis have no direction.
        time_frequencies: number of Fourier frequencies embedding ``t``.
        output_scale: initial value of the learned output scale ``s``.
        hydrogen_feature: the column of the atom features that is 1 on hydrogens, or ``None``. When set, the
            through-space graph joins heavy atoms only (hydrogens exchange messages over their bond; the head
            still sees every atom). With 2 layers and a 5 Å head: 0.58x the inference time, the same fit
            (``benchmarks/results/torsion_network_heavy.md``); the shipped model uses it.
    """

    node_features: int
    edge_features: int = 0
    num_layers: int = 3
    hidden: int = 32
    radial_basis: int = 16
    cutoff_angstrom: float = 5.0
    head_cutoff_angstrom: float = 12.0
    harmonics: int = 3
    head_channels: int = 16
    softening_angstrom: float = 0.5
    time_frequencies: int = 8
    output_scale: float = 1.0
    hydrogen_feature: int | None = None

    def __post_init__(self) -> None:
        if self.hydrogen_feature is not None and not 0 <= self.hydrogen_feature < self.node_features:
            raise ValueError(f"hydrogen_feature must index the {self.node_features} atom features")
        for name in ("node_features", "num_layers", "hidden", "radial_basis", "harmonics", "head_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.edge_features < 0:
            raise ValueError(f"edge_features must be >= 0, got {self.edge_features}")
        for name in ("cutoff_angstrom", "head_cutoff_angstrom", "softening_angstrom", "output_scale"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, n_out))


class _GaussianBasis(nn.Module):
    def __init__(self, size: int, cutoff: float) -> None:
        super().__init__()
        self.centres: torch.Tensor
        self.register_buffer("centres", torch.linspace(0.0, cutoff, size), persistent=False)
        self.width = cutoff / max(size - 1, 1)

    def forward(self, distance: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * ((distance.unsqueeze(-1) - self.centres.to(distance.dtype)) / self.width) ** 2)


class _Messages(nn.Module):
    """``phi(h_i, h_j, pair)`` with the first linear map split by input block (per-node projections once)."""

    def __init__(self, hidden: int, pair_in: int) -> None:
        super().__init__()
        self.src = nn.Linear(hidden, hidden)
        self.dst = nn.Linear(hidden, hidden, bias=False)
        self.pair = nn.Linear(pair_in, hidden, bias=False)
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())

    def forward(self, h: torch.Tensor, index: torch.Tensor, pair: torch.Tensor) -> torch.Tensor:
        return self.out(self.src(h)[index[0]] + self.dst(h)[index[1]] + self.pair(pair))


class _InvariantLayer(nn.Module):
    def __init__(self, hidden: int, radial: int, bond_in: int) -> None:
        super().__init__()
        self.space = _Messages(hidden, radial)
        self.bond = _Messages(hidden, radial + bond_in)
        self.node = _mlp(2 * hidden, hidden, hidden)

    def forward(
        self,
        h: torch.Tensor,
        space: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        bond: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        space_index, space_pair, envelope = space
        bond_index, bond_pair = bond
        agg = torch.zeros_like(h).index_add_(0, space_index[1], self.space(h, space_index, space_pair) * envelope)
        agg = agg.index_add_(0, bond_index[1], self.bond(h, bond_index, bond_pair))
        return h + self.node(torch.cat([h, agg], dim=-1))


def _plane_frame(axis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A right-handed orthonormal ``(p1, p2)`` perpendicular to each unit ``axis`` ``[T, 3]`` (``p1``: the
    coordinate axis least aligned with ``axis``, projected; the head does not depend on this choice)."""
    ref = nn.functional.one_hot(axis.abs().argmin(-1), 3).to(axis.dtype)
    p1 = ref - (ref * axis).sum(-1, keepdim=True) * axis
    p1 = p1 / p1.norm(dim=-1, keepdim=True)
    return p1, torch.linalg.cross(axis, p1, dim=-1)


def _harmonics(re: torch.Tensor, im: torch.Tensor, k_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``zeta^k`` for ``k = 1 .. k_max`` as real and imaginary parts ``[P, K]``."""
    res, ims = [re], [im]
    for _ in range(k_max - 1):
        a, b = res[-1], ims[-1]
        res.append(a * re - b * im)
        ims.append(a * im + b * re)
    return torch.stack(res, dim=-1), torch.stack(ims, dim=-1)


@dataclass(frozen=True)
class _Environment:
    """The (torsion, atom) pairs within the head cutoff and their geometry about the torsion's bond."""

    tau: torch.Tensor  # [P] torsion
    atom: torch.Tensor  # [P] atom
    dist: torch.Tensor  # [P] distance to the bond midpoint
    z: torch.Tensor  # [P] axial coordinate (odd under reversal)
    side: torch.Tensor  # [P] +1 on c's side, -1 on b's (odd under reversal)
    soft: torch.Tensor  # [P] softened distance to the axis
    zeta_re: torch.Tensor  # [P, K] Re zeta^k
    zeta_im: torch.Tensor  # [P, K] Im zeta^k


def _environment(
    positions: torch.Tensor,
    torsion_atoms: torch.Tensor,
    pairs: torch.Tensor,
    sides: torch.Tensor,
    config: TorsionControlConfig,
) -> _Environment:
    b, c = torsion_atoms[:, 1], torsion_atoms[:, 2]
    bond = positions[c] - positions[b]
    axis = bond / bond.norm(dim=-1, keepdim=True)
    r = positions[pairs[1]] - 0.5 * (positions[b] + positions[c])[pairs[0]]
    dist = torch.sqrt((r * r).sum(-1) + 1e-12)
    keep = dist < config.head_cutoff_angstrom
    tau, r, dist = pairs[0, keep], r[keep], dist[keep]
    e = axis[tau]
    z = (r * e).sum(-1)
    u = r - z.unsqueeze(-1) * e
    soft = torch.sqrt((u * u).sum(-1) + config.softening_angstrom**2)
    p1, p2 = _plane_frame(axis)
    zeta = _harmonics((u * p1[tau]).sum(-1) / soft, (u * p2[tau]).sum(-1) / soft, config.harmonics)
    side = sides[keep].to(r.dtype)
    return _Environment(tau, pairs[1, keep], dist, z, side, soft, *zeta)


class _TorsionHead(nn.Module):
    """The bond-centred harmonic head (module docstring, stage 2)."""

    def __init__(self, config: TorsionControlConfig, time_dim: int) -> None:
        super().__init__()
        hidden, width = config.hidden, config.head_channels * config.harmonics
        self.config = config
        self.basis = _GaussianBasis(config.radial_basis, config.head_cutoff_angstrom)
        self.atom = nn.Linear(hidden, hidden)
        self.left = nn.Linear(hidden, hidden, bias=False)
        self.right = nn.Linear(hidden, hidden, bias=False)
        self.geometry = nn.Linear(config.radial_basis + 1, hidden, bias=False)
        self.axial = nn.Linear(2, hidden, bias=False)  # odd: the reversed torsion sees -z and -side
        self.weights = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, width))
        last = nn.Linear(hidden, width)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.gate = nn.Sequential(nn.Linear(2 * hidden + time_dim + 2 * width, hidden), nn.SiLU(), last)

    def forward(
        self,
        h: torch.Tensor,
        positions: torch.Tensor,
        torsion_atoms: torch.Tensor,
        pairs: torch.Tensor,
        sides: torch.Tensor,
        time: torch.Tensor,
    ) -> torch.Tensor:
        cfg = self.config
        env = _environment(positions, torsion_atoms, pairs, sides, cfg)
        b, c, tau, scale = torsion_atoms[:, 1], torsion_atoms[:, 2], env.tau, cfg.head_cutoff_angstrom
        geometry = torch.cat([self.basis(env.dist), (env.soft / scale).unsqueeze(-1)], dim=-1)
        shared = self.atom(h)[env.atom] + self.geometry(geometry)
        axial = self.axial(torch.stack([env.z / scale, env.side], dim=-1))
        envelope = cosine_cutoff(env.dist, scale).unsqueeze(-1).unsqueeze(-1)
        shape = (-1, cfg.head_channels, cfg.harmonics)
        lb, rb = self.left(h), self.right(h)
        alpha = self.weights(shared + axial + lb[b[tau]] + rb[c[tau]]).view(shape) * envelope
        beta = self.weights(shared - axial + lb[c[tau]] + rb[b[tau]]).view(shape) * envelope

        def total(w: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
            out = w.new_zeros(torsion_atoms.shape[0], cfg.head_channels, cfg.harmonics)
            return out.index_add_(0, tau, w * part.unsqueeze(1))

        a_re, a_im = total(alpha, env.zeta_re), total(alpha, env.zeta_im)
        b_re, b_im = total(beta, env.zeta_re), total(beta, env.zeta_im)
        odd = (a_re * b_im - a_im * b_re).flatten(1)
        even = torch.asinh((a_re * b_re + a_im * b_im).flatten(1))
        power = torch.asinh((a_re**2 + a_im**2 + b_re**2 + b_im**2).flatten(1))
        hb, hc = h[b], h[c]
        gamma = self.gate(torch.cat([hb + hc, hb * hc, time, even, power], dim=-1))
        return (gamma * odd).sum(-1)


@dataclass(frozen=True)
class GraphIndex:
    """The pair lists of a batch that depend on its graphs only (not on the geometry): computed once per
    batch and reused over the steps of an integration."""

    atom_pairs: torch.Tensor  # [2, P] every ordered pair of distinct atoms of one graph
    torsion_pairs: torch.Tensor  # [2, Q] every (torsion, atom of its graph)
    sides: torch.Tensor  # [Q] +1 on c's side of the torsion's bond, -1 on b's


def graph_index(
    node_batch: torch.Tensor,
    num_graphs: int,
    edge_index: torch.Tensor,
    torsion_atoms: torch.Tensor,
    torsion_batch: torch.Tensor,
    *,
    space_atoms: torch.Tensor | None = None,
) -> GraphIndex:
    """The :class:`GraphIndex` of a batch (arguments as in :meth:`TorsionControlNetwork.forward`);
    ``space_atoms`` (``[N]`` bool): only pairs of these atoms enter the through-space graph."""
    pairs = pairs_within_graphs(node_batch, num_graphs)
    if space_atoms is not None:
        pairs = pairs[:, space_atoms[pairs[0]] & space_atoms[pairs[1]]]
    return GraphIndex(
        pairs,
        torsion_atom_pairs(torsion_batch, node_batch, num_graphs),
        torsion_sides(torsion_atoms, torsion_batch, edge_index, node_batch, num_graphs),
    )


class TorsionControlNetwork(nn.Module):
    """``v_theta(t, x) = u_theta / sigma_t``, one scalar per torsion (see the module docstring)."""

    def __init__(self, config: TorsionControlConfig) -> None:
        super().__init__()
        self.config = config
        self.time = FourierTime(config.time_frequencies)
        self.embed = nn.Linear(config.node_features + self.time.dim, config.hidden)
        self.basis = _GaussianBasis(config.radial_basis, config.cutoff_angstrom)
        self.layers = nn.ModuleList(
            _InvariantLayer(config.hidden, config.radial_basis, config.edge_features) for _ in range(config.num_layers)
        )
        self.head = _TorsionHead(config, self.time.dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(config.output_scale)))

    def forward(
        self,
        t: torch.Tensor,
        positions: torch.Tensor,
        node_attr: torch.Tensor,
        edge_index: torch.Tensor,
        edge_attr: torch.Tensor,
        node_batch: torch.Tensor,
        torsion_atoms: torch.Tensor,
        torsion_batch: torch.Tensor,
        index: GraphIndex | None = None,
    ) -> torch.Tensor:
        """``v [T]``, one per row of ``torsion_atoms``.

        Args:
            t: ``[G]`` time of each sample (graph), in [0, 1].
            positions: ``[N, 3]`` atom positions in Å.
            node_attr: ``[N, F]`` atom features.
            edge_index: ``[2, E]`` covalent bonds, global atom indices, both directions.
            edge_attr: ``[E, B]`` bond features.
            node_batch: ``[N]`` sample of each atom.
            torsion_atoms: ``[T, 4]`` global indices ``a, b, c, d`` of each torsion (rotation about ``b-c``).
            torsion_batch: ``[T]`` sample of each torsion.
            index: :func:`graph_index` of these tensors, when the caller reuses one batch over many calls (an
                integration); computed here otherwise. It depends only on the graph, never on ``positions``.
        """
        self._check(t, positions, node_attr, edge_index, edge_attr, node_batch, torsion_atoms, torsion_batch)
        dtype, num_graphs = positions.dtype, t.shape[0]
        h = self.embed(torch.cat([node_attr.to(dtype), self.time(t[node_batch], dtype)], dim=-1))
        if index is None:
            index = self.graph_index(node_attr, node_batch, num_graphs, edge_index, torsion_atoms, torsion_batch)
        space = index.atom_pairs
        diff = positions[space[0]] - positions[space[1]]
        dist = torch.sqrt((diff * diff).sum(-1) + 1e-12)
        keep = dist < self.config.cutoff_angstrom
        space, dist = space[:, keep], dist[keep]
        space_in = (space, self.basis(dist), cosine_cutoff(dist, self.config.cutoff_angstrom).unsqueeze(-1))
        bond_vec = positions[edge_index[0]] - positions[edge_index[1]]
        bond_len = torch.sqrt((bond_vec * bond_vec).sum(-1) + 1e-12)
        bond_in = (edge_index, torch.cat([self.basis(bond_len), edge_attr.to(dtype)], dim=-1))
        for layer in self.layers:
            h = layer(h, space_in, bond_in)
        v = self.head(h, positions, torsion_atoms, index.torsion_pairs, index.sides, self.time(t[torsion_batch], dtype))
        return v * self.log_scale.exp()

    def graph_index(
        self,
        node_attr: torch.Tensor,
        node_batch: torch.Tensor,
        num_graphs: int,
        edge_index: torch.Tensor,
        torsion_atoms: torch.Tensor,
        torsion_batch: torch.Tensor,
    ) -> GraphIndex:
        """This network's :class:`GraphIndex` of a batch (heavy atoms only in the through-space graph where
        the config names a hydrogen feature)."""
        column = self.config.hydrogen_feature
        space = None if column is None else node_attr[:, column] < 0.5
        return graph_index(node_batch, num_graphs, edge_index, torsion_atoms, torsion_batch, space_atoms=space)

    def _check(self, t: torch.Tensor, positions: torch.Tensor, *rest: torch.Tensor) -> None:
        node_attr, edge_index, edge_attr, node_batch, torsion_atoms, torsion_batch = rest
        n = positions.shape[0]
        if t.ndim != 1:
            raise ValueError(f"t must be [G], got {tuple(t.shape)}")
        if positions.ndim != 2 or positions.shape[1] != 3:
            raise ValueError(f"positions must be [N, 3], got {tuple(positions.shape)}")
        if node_attr.shape != (n, self.config.node_features):
            raise ValueError(f"node_attr must be [{n}, {self.config.node_features}], got {tuple(node_attr.shape)}")
        if edge_index.ndim != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must be [2, E], got {tuple(edge_index.shape)}")
        if edge_attr.shape != (edge_index.shape[1], self.config.edge_features):
            raise ValueError(f"edge_attr must be [E, {self.config.edge_features}], got {tuple(edge_attr.shape)}")
        if node_batch.shape != (n,):
            raise ValueError(f"node_batch must be [{n}], got {tuple(node_batch.shape)}")
        if torsion_atoms.ndim != 2 or torsion_atoms.shape[1] != 4:
            raise ValueError(f"torsion_atoms must be [T, 4], got {tuple(torsion_atoms.shape)}")
        if torsion_batch.shape != (torsion_atoms.shape[0],):
            raise ValueError(f"torsion_batch must be [{torsion_atoms.shape[0]}], got {tuple(torsion_batch.shape)}")

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_torsion_control(config: TorsionControlConfig) -> TorsionControlNetwork:
    """The torsion control network that ``config`` describes."""
    return TorsionControlNetwork(config)


def torsion_network_to_dict(config: TorsionControlConfig) -> dict[str, Any]:
    """Plain dict of the config, tagged ``"kind": "torsion"`` like :func:`sampler.networks.network_to_dict`."""
    return {"kind": TORSION_NETWORK_KIND, **dataclasses.asdict(config)}


def torsion_network_from_dict(d: dict[str, Any]) -> TorsionControlConfig:
    """Inverse of :func:`torsion_network_to_dict`."""
    fields = dict(d)
    kind = fields.pop("kind", None)
    if kind != TORSION_NETWORK_KIND:
        raise ValueError(f"not a torsion control-network config: kind {kind!r}, expected {TORSION_NETWORK_KIND!r}")
    return TorsionControlConfig(**fields)


def describe_torsion_network(config: TorsionControlConfig) -> str:
    """A short human-readable name, e.g. ``torsion 3x32, harmonics 1-3``."""
    return f"torsion {config.num_layers}x{config.hidden}, harmonics 1-{config.harmonics}"
