"""The bond-validity regulariser of ALGORITHM.md section 4: keep bonds bonded and non-bonded atoms apart.

.. math::

    E_\\mathrm{reg}(x) = \\alpha \\sum_{i<j} \\Big[ b_{ij}\\,\\mathrm{relu}\\big(d_{ij} - 1.5\\,(r^\\mathrm{cov}_i
        + r^\\mathrm{cov}_j)\\big) + (1 - b_{ij})\\,\\mathrm{relu}\\big((r^\\mathrm{vdW}_i + r^\\mathrm{vdW}_j)/1.5
        - d_{ij}\\big) \\Big], \\qquad \\alpha = 100~\\mathrm{eV/Å},

over the pairs of atoms of one molecule, ``b_ij = 1`` for covalent bonds (from the connection table or an
edge list). Radii are RDKit's periodic-table values (Å). The gradient is analytic (piecewise constant in
magnitude, along the pair axis; zero for coincident atoms, where the axis is undefined).

In training the gradient is added to the RAM target's ``grad g`` without division by tau and clipped
separately (:func:`sampler.loss.adjoint_target`, ``extra_gradient``); :class:`energy.target.EnergyTarget`
passes it when built with a regulariser. Everything after the radii lookup is batched torch on the
positions' device and dtype.

Example::

    >>> import torch
    >>> topo = pair_topology(torch.tensor([2]), torch.tensor([6, 6]), torch.tensor([[0], [1]]))
    >>> reg = BondValidityRegulariser()
    >>> stretched = torch.tensor([[0.0, 0.0, 0.0], [3.28, 0.0, 0.0]], dtype=torch.float64)
    >>> round(float(reg(stretched, topo).energies[0]), 6)  # 100 * (3.28 - 1.5 * (0.76 + 0.76))
    100.0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from rdkit import Chem

from energy.protocol import Structures

__all__ = [
    "BondValidityRegulariser",
    "PairTopology",
    "RegulariserResult",
    "bonds_from_connection_table",
    "element_radii",
    "pair_topology",
]


def element_radii() -> tuple[torch.Tensor, torch.Tensor]:
    """Covalent and van der Waals radii (Å) indexed by atomic number ``0..118``, from RDKit."""
    table = Chem.GetPeriodicTable()
    cov = torch.tensor([table.GetRcovalent(z) for z in range(119)], dtype=torch.float64)
    vdw = torch.tensor([table.GetRvdw(z) for z in range(119)], dtype=torch.float64)
    return cov, vdw


def bonds_from_connection_table(table: str) -> torch.Tensor:
    """``[2, B]`` atom indices of the bonds of one MDL mol block (no sanitization: bonds as written)."""
    mol = Chem.MolFromMolBlock(table, sanitize=False, removeHs=False)
    if mol is None:
        raise ValueError("connection table could not be parsed (RDKit rejected the mol block)")
    pairs = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()]
    return torch.tensor(pairs, dtype=torch.long).reshape(-1, 2).T.contiguous()


@dataclass(frozen=True, kw_only=True)
class PairTopology:
    """The atom pairs ``i < j`` within each structure of a ragged batch, ``P`` pairs in total.

    Attributes:
        first, second: ``[P]`` atom indices into the batch's ``[N, 3]`` positions.
        graph: ``[P]`` structure index of each pair.
        bonded: ``[P]`` bool, covalent bond.
        threshold: ``[P]`` Å: the longest allowed bond (bonded) or the shortest allowed distance (non-bonded).
        num_structures: ``G``.
    """

    first: torch.Tensor
    second: torch.Tensor
    graph: torch.Tensor
    bonded: torch.Tensor
    threshold: torch.Tensor
    num_structures: int


def _all_pairs(num_atoms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(first, second, graph)`` of every pair ``i < j`` within each structure, grouped by size."""
    offsets = torch.cumsum(num_atoms, 0) - num_atoms
    firsts, seconds, graphs = [], [], []
    for n in torch.unique(num_atoms).tolist():
        members = (num_atoms == n).nonzero().flatten()
        i, j = torch.triu_indices(n, n, offset=1)
        base = offsets[members][:, None]
        firsts.append((base + i).flatten())
        seconds.append((base + j).flatten())
        graphs.append(members[:, None].expand(-1, i.numel()).flatten())
    if not firsts:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty, empty
    return torch.cat(firsts), torch.cat(seconds), torch.cat(graphs)


def _repeat(values: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``torch.repeat_interleave`` through numpy (torch's enters a thread pool: milliseconds when busy)."""
    return torch.from_numpy(np.repeat(values.numpy(), counts.numpy()))


def _angle_pair_keys(lo: torch.Tensor, hi: torch.Tensor, n: int) -> torch.Tensor:
    """Keys ``i * n + j`` (``i < j``) of the atom pairs bonded to a common atom."""
    center, other = torch.cat([lo, hi]), torch.cat([hi, lo])  # directed edges
    order = torch.argsort(center, stable=True)
    center, other = center[order], other[order]
    degree = torch.bincount(center, minlength=n)
    start = torch.cumsum(degree, 0) - degree  # first directed edge of each center
    reps = degree[center]  # edge k pairs with every edge around its center
    first = _repeat(torch.arange(center.numel()), reps)
    offset = torch.arange(int(reps.sum())) - _repeat(torch.cumsum(reps, 0) - reps, reps)
    second = _repeat(start[center], reps) + offset
    i, j = other[first], other[second]
    upper = i < j
    return i[upper] * n + j[upper]


def pair_topology(
    num_atoms: torch.Tensor,
    atomic_numbers: torch.Tensor,
    bonds: torch.Tensor,
    *,
    bond_factor: float = 1.5,
    vdw_factor: float = 1.5,
    exclude_angle_pairs: bool = False,
) -> PairTopology:
    """Pairs and thresholds of a ragged batch.

    Args:
        num_atoms: ``[G]`` atoms per structure.
        atomic_numbers: ``[N]``.
        bonds: ``[2, B]`` batch-global atom indices of the covalent bonds (either order).
        bond_factor: a bond is stretched beyond ``bond_factor * (rcov_i + rcov_j)``.
        vdw_factor: non-bonded atoms clash below ``(rvdw_i + rvdw_j) / vdw_factor``.
        exclude_angle_pairs: leave out pairs two bonds apart (1-3 pairs, whose distance the bond angle
            sets). ``False`` is the formula of ALGORITHM.md, under which some equilibrium geometries are
            already penalized: the C···H pair of a carboxylic acid (1.84 Å < (1.7 + 1.2) / 1.5 = 1.93 Å)
            and the cross-ring C···C pairs of cyclobutane.
    """
    num_atoms = num_atoms.cpu().long()
    atomic_numbers = atomic_numbers.cpu().long()
    n = int(num_atoms.sum())
    first, second, graph = _all_pairs(num_atoms)
    bonds = bonds.cpu().long().reshape(2, -1)
    if bonds.numel() and (int(bonds.min()) < 0 or int(bonds.max()) >= n):
        raise ValueError(f"bond indices must lie in [0, {n}), got [{int(bonds.min())}, {int(bonds.max())}]")
    lo, hi = torch.minimum(bonds[0], bonds[1]), torch.maximum(bonds[0], bonds[1])
    keys = first * n + second
    bonded = torch.isin(keys, lo * n + hi)
    if exclude_angle_pairs:
        keep = bonded | ~torch.isin(keys, _angle_pair_keys(lo, hi, n))
        first, second, graph, bonded = first[keep], second[keep], graph[keep], bonded[keep]
    cov, vdw = element_radii()
    zi, zj = atomic_numbers[first], atomic_numbers[second]
    threshold = torch.where(bonded, bond_factor * (cov[zi] + cov[zj]), (vdw[zi] + vdw[zj]) / vdw_factor)
    return PairTopology(
        first=first,
        second=second,
        graph=graph,
        bonded=bonded,
        threshold=threshold,
        num_structures=int(num_atoms.numel()),
    )


@dataclass(frozen=True)
class RegulariserResult:
    """``energies``: ``[G]`` eV; ``gradient``: ``[N, 3]`` eV/Å (``+dE_reg/dx``)."""

    energies: torch.Tensor
    gradient: torch.Tensor


@dataclass(frozen=True, kw_only=True)
class BondValidityRegulariser:
    """``E_reg`` and its gradient for a ragged batch; ``alpha`` in eV/Å (100 in the paper).

    ``bond_factor``, ``vdw_factor`` and ``exclude_angle_pairs`` as in :func:`pair_topology`.
    """

    alpha: float = 100.0
    bond_factor: float = 1.5
    vdw_factor: float = 1.5
    exclude_angle_pairs: bool = False

    def topology(self, structures: Structures) -> PairTopology:
        """Pairs from the structures' connection tables; a structure without one is an error."""
        tables: Sequence[str | None] = structures.connection_tables or (None,) * structures.num_structures
        counts = structures.num_atoms.tolist()
        parts, start = [], 0
        for k, (table, n) in enumerate(zip(tables, counts, strict=True)):
            if table is None:
                raise ValueError(f"structure {k} has no connection table: the regulariser needs its bonds")
            local = bonds_from_connection_table(table)
            if local.numel() and int(local.max()) >= n:
                raise ValueError(f"structure {k}: connection table bonds atom {int(local.max())} of {n} atoms")
            parts.append(local + start)
            start += int(n)
        bonds = torch.cat(parts, 1) if parts else torch.zeros(2, 0, dtype=torch.long)
        return pair_topology(
            structures.num_atoms,
            structures.atomic_numbers,
            bonds,
            bond_factor=self.bond_factor,
            vdw_factor=self.vdw_factor,
            exclude_angle_pairs=self.exclude_angle_pairs,
        )

    def __call__(self, positions: torch.Tensor, topology: PairTopology) -> RegulariserResult:
        """Energies ``[G]`` and analytic gradient ``[N, 3]`` at ``positions`` ``[N, 3]``."""
        dev, dtype = positions.device, positions.dtype
        first, second = topology.first.to(dev), topology.second.to(dev)
        graph, bonded = topology.graph.to(dev), topology.bonded.to(dev)
        threshold = topology.threshold.to(device=dev, dtype=dtype)
        diff = positions[first] - positions[second]
        d = diff.norm(dim=-1)
        excess = torch.where(bonded, d - threshold, threshold - d)
        pair_energy = self.alpha * torch.relu(excess)
        energies = torch.zeros(topology.num_structures, device=dev, dtype=dtype).index_add_(0, graph, pair_energy)
        # dE/dd: +alpha for a stretched bond, -alpha for a clash; along the unit vector from j to i
        slope = torch.where(excess > 0, self.alpha * (bonded.to(dtype) * 2 - 1), torch.zeros_like(d))
        unit = torch.where(d[:, None] > 0, diff / d.clamp_min(torch.finfo(dtype).tiny)[:, None], torch.zeros_like(diff))
        pair_grad = slope[:, None] * unit
        gradient = torch.zeros_like(positions).index_add_(0, first, pair_grad).index_add_(0, second, -pair_grad)
        return RegulariserResult(energies=energies, gradient=gradient)

    def evaluate(self, structures: Structures) -> RegulariserResult:
        """Topology from the connection tables, then :meth:`__call__` at the structures' positions."""
        return self(structures.positions, self.topology(structures))
