"""Torsion angles → Cartesian positions: the differentiable map ``x(phi)`` of torsional Adjoint Sampling.

Everything but the rotatable torsions is frozen from a seed conformer (ALGORITHM.md section 6b). Torsion
``i`` is the dihedral ``a_i–b_i–c_i–d_i`` about the bond ``b_i–c_i``; its *moving side* ``S_i`` is the set of
atoms on the ``c_i`` side of that bond (``c_i`` and ``d_i`` are in it, ``a_i`` and ``b_i`` are not).
``phi_i`` is the ABSOLUTE dihedral in ``[-pi, pi)`` (IUPAC sign, as RDKit's ``GetDihedralRad``).

The map, per sample, starting from the seed ``x^0``::

    for i = 0 .. m-1:                               (torsion order within the sample)
        delta_i = phi_i - dihedral_i(x^i)           (measured on the current structure)
        x^{i+1}_j = R(k_i, delta_i) (x^i_j - x^i_{b_i}) + x^i_{b_i}   for j in S_i,   k_i = unit(x_c - x_b)
        x^{i+1}_j = x^i_j                                              otherwise
    x(phi) = x^m - mean_j x^m_j                     (plain, unweighted centre: as sampler.state.remove_com)

with ``R(k, theta) v = v cos(theta) + (k x v) sin(theta) + k (k . v)(1 - cos(theta))`` (Rodrigues).

Because the torsion bonds are acyclic, a rotation about bond ``j`` moves the four atoms of any other
torsion ``i`` rigidly (or two of them lie on its axis), so it never changes ``dihedral_i``: the final
structure has exactly the requested dihedrals whatever the order, and its internal geometry (every
distance) does not depend on the order or on which side of each bond moves; only the Cartesian frame does.
For a rigid-motion-invariant energy the torsion gradient is therefore the torque of the Cartesian gradient
about each bond (:func:`torsion_torque`), and equals the exact vector–Jacobian product
(:func:`torsion_gradient`).

The unweighted centre is used (not the mass-weighted one): the energy is translation invariant, the
sampler's Cartesian state uses the same convention, and no atomic masses need to travel with the batch.

Batching: ``G`` samples (copies of possibly different molecules) in the torch-geometric layout. The loop
runs over the torsion position ``j = 0 .. max_m - 1`` and, at each ``j``, rotates the ``j``-th torsion of
every sample at once (their moving sets are disjoint, being in different samples).

Example:
    >>> import math, torch
    >>> x = torch.tensor([[1.0, 1, 0], [0, 0, 0], [0, 0, 1.5], [1, -1, 1.5]], dtype=torch.float64)
    >>> batch = TorsionBatch.single(x, torsion_atoms=torch.tensor([[0, 1, 2, 3]]), moving=[[2, 3]])
    >>> phi = torch.tensor([0.25])
    >>> y = torsion_positions(batch, phi.double())
    >>> round(float(dihedral(y, batch.torsion_atoms)), 6)
    0.25
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch

__all__ = [
    "TorsionBatch",
    "TorsionSystem",
    "collate_torsion_systems",
    "dihedral",
    "random_seed_index",
    "torsion_gradient",
    "torsion_positions",
    "torsion_torque",
]


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def _check_long(name: str, t: torch.Tensor, shape: tuple[int | None, ...]) -> None:
    _check(t.dtype == torch.long, f"{name} must be a long tensor, got {t.dtype}")
    ok = t.ndim == len(shape) and all(s is None or s == d for s, d in zip(shape, t.shape, strict=True))
    _check(ok, f"{name} must have shape {shape} (None: any), got {tuple(t.shape)}")


@dataclass(frozen=True, kw_only=True)
class TorsionSystem:
    """One molecule's torsional description (local atom indices ``0 .. n-1``).

    Attributes:
        seed_positions: ``[S, n, 3]`` seed conformers (Å), several so that ring puckers are not frozen to one.
        torsion_atoms: ``[m, 4]`` long, ``(a, b, c, d)`` of each torsion; ``c`` is on the moving side.
        moving_atoms: ``[M]`` long, the moving sides of all torsions, concatenated in torsion order.
        moving_ptr: ``[m + 1]`` long, torsion ``i`` moves ``moving_atoms[moving_ptr[i]:moving_ptr[i+1]]``.
        node_attr: ``[n, F]`` float atom features for the control network.
        edge_index: ``[2, E]`` long, the covalent bonds in both directions.
        edge_attr: ``[E, B]`` float bond features.
        system_id: identifier used by the replay buffer and the energy adapters.
    """

    seed_positions: torch.Tensor
    torsion_atoms: torch.Tensor
    moving_atoms: torch.Tensor
    moving_ptr: torch.Tensor
    node_attr: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    system_id: int = 0

    def __post_init__(self) -> None:
        s = self.seed_positions
        _check(
            s.ndim == 3 and s.shape[0] >= 1 and s.shape[2] == 3,
            f"seed_positions must be [S>=1, n, 3], got {tuple(s.shape)}",
        )
        n = int(s.shape[1])
        _check(self.node_attr.ndim == 2 and self.node_attr.shape[0] == n, f"node_attr must be [{n}, F]")
        _check_long("torsion_atoms", self.torsion_atoms, (None, 4))
        m = int(self.torsion_atoms.shape[0])
        _check_long("moving_ptr", self.moving_ptr, (m + 1,))
        _check_long("moving_atoms", self.moving_atoms, (None,))
        _check_long("edge_index", self.edge_index, (2, None))
        _check(
            self.edge_attr.ndim == 2 and self.edge_attr.shape[0] == self.edge_index.shape[1], "edge_attr must be [E, B]"
        )
        ptr = self.moving_ptr
        _check(int(ptr[0]) == 0 and int(ptr[-1]) == self.moving_atoms.numel(), "moving_ptr must run from 0 to M")
        _check(bool((ptr[1:] > ptr[:-1]).all()), "every torsion must move at least one atom")
        for name, t in (
            ("torsion_atoms", self.torsion_atoms),
            ("moving_atoms", self.moving_atoms),
            ("edge_index", self.edge_index),
        ):
            _check(
                t.numel() == 0 or (int(t.min()) >= 0 and int(t.max()) < n),
                f"{name} refers to an atom outside 0..{n - 1}",
            )
        owner = torch.repeat_interleave(torch.arange(m), ptr[1:] - ptr[:-1])
        moving = torch.zeros(m, n, dtype=torch.bool)
        moving[owner, self.moving_atoms] = True
        rows = torch.arange(m)
        a, b, c, d = self.torsion_atoms.unbind(1)
        _check(bool(moving[rows, c].all() and moving[rows, d].all()), "c and d must be on the moving side")
        _check(not bool(moving[rows, a].any() or moving[rows, b].any()), "a and b must not be on the moving side")

    @property
    def num_atoms(self) -> int:
        return int(self.seed_positions.shape[1])

    @property
    def num_torsions(self) -> int:
        return int(self.torsion_atoms.shape[0])

    @property
    def num_seeds(self) -> int:
        return int(self.seed_positions.shape[0])

    def seed_torsions(self) -> torch.Tensor:
        """``[S, m]`` the dihedrals of each seed."""
        return torch.stack([dihedral(x, self.torsion_atoms) for x in self.seed_positions])


@dataclass(frozen=True, kw_only=True)
class TorsionBatch:
    """``G`` samples (copies of molecules, each with its seed) with ``N`` atoms and ``T`` torsions in total.

    Attributes:
        positions: ``[N, 3]`` seed positions of each sample.
        node_batch: ``[N]`` long, sample of each atom (sorted).
        num_nodes: ``[G]`` long.
        torsion_atoms: ``[T, 4]`` long, global atom indices ``(a, b, c, d)``.
        torsion_batch: ``[T]`` long, sample of each torsion (sorted; within a sample, rotation order).
        moving_atoms: ``[M]`` long, global indices of the atoms each torsion moves, grouped by torsion.
        moving_torsion: ``[M]`` long, the torsion each entry of ``moving_atoms`` belongs to (sorted).
        node_attr: ``[N, F]`` atom features.
        edge_index: ``[2, E]`` long, covalent bonds, both directions, global indices.
        edge_attr: ``[E, B]`` bond features.
        system_ids: ``[G]`` long, the molecule of each sample.
        seed_index: ``[G]`` long, which seed of its molecule each sample starts from.
    """

    positions: torch.Tensor
    node_batch: torch.Tensor
    num_nodes: torch.Tensor
    torsion_atoms: torch.Tensor
    torsion_batch: torch.Tensor
    moving_atoms: torch.Tensor
    moving_torsion: torch.Tensor
    node_attr: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    system_ids: torch.Tensor
    seed_index: torch.Tensor

    def __post_init__(self) -> None:
        n, g, t = self.positions.shape[0], self.num_nodes.shape[0], self.torsion_atoms.shape[0]
        _check(self.positions.ndim == 2 and self.positions.shape[1] == 3, "positions must be [N, 3]")
        _check_long("node_batch", self.node_batch, (n,))
        _check_long("num_nodes", self.num_nodes, (g,))
        _check_long("torsion_atoms", self.torsion_atoms, (t, 4))
        _check_long("torsion_batch", self.torsion_batch, (t,))
        _check_long("moving_atoms", self.moving_atoms, (None,))
        _check_long("moving_torsion", self.moving_torsion, (self.moving_atoms.shape[0],))
        _check(self.node_attr.ndim == 2 and self.node_attr.shape[0] == n, "node_attr must be [N, F]")
        _check_long("edge_index", self.edge_index, (2, None))
        _check(
            self.edge_attr.ndim == 2 and self.edge_attr.shape[0] == self.edge_index.shape[1], "edge_attr must be [E, B]"
        )
        _check_long("system_ids", self.system_ids, (g,))
        _check_long("seed_index", self.seed_index, (g,))

    @classmethod
    def single(
        cls, positions: torch.Tensor, *, torsion_atoms: torch.Tensor, moving: Sequence[Sequence[int]]
    ) -> TorsionBatch:
        """One sample without graph features (for tests and examples)."""
        sizes = torch.tensor([len(s) for s in moving], dtype=torch.long)
        n = positions.shape[0]
        return cls(
            positions=positions,
            node_batch=torch.zeros(n, dtype=torch.long),
            num_nodes=torch.tensor([n]),
            torsion_atoms=torsion_atoms.long(),
            torsion_batch=torch.zeros(torsion_atoms.shape[0], dtype=torch.long),
            moving_atoms=torch.tensor([i for s in moving for i in s], dtype=torch.long),
            moving_torsion=torch.repeat_interleave(torch.arange(len(moving)), sizes),
            node_attr=positions.new_zeros(n, 0),
            edge_index=torch.zeros(2, 0, dtype=torch.long),
            edge_attr=positions.new_zeros(0, 0),
            system_ids=torch.zeros(1, dtype=torch.long),
            seed_index=torch.zeros(1, dtype=torch.long),
        )

    @property
    def num_graphs(self) -> int:
        return int(self.num_nodes.shape[0])

    @property
    def num_torsions(self) -> int:
        return int(self.torsion_atoms.shape[0])

    @property
    def ptr(self) -> torch.Tensor:
        """``[G + 1]`` offsets of each sample's first atom."""
        return torch.cat([self.num_nodes.new_zeros(1), torch.cumsum(self.num_nodes, 0)])

    @property
    def torsions_per_graph(self) -> torch.Tensor:
        """``[G]`` long, number of torsions of each sample."""
        return torch.bincount(self.torsion_batch, minlength=self.num_graphs)

    @property
    def moving_ptr(self) -> torch.Tensor:
        """``[T + 1]``: torsion ``i`` moves ``moving_atoms[moving_ptr[i]:moving_ptr[i+1]]``."""
        counts = torch.bincount(self.moving_torsion, minlength=self.num_torsions)
        return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])

    @cached_property
    def _schedule(self) -> _Schedule:
        return _Schedule.of(self)

    def _clone(self) -> TorsionBatch:
        return TorsionBatch(**{f.name: getattr(self, f.name).clone() for f in dataclasses.fields(self)})

    def replace(self, **changes: torch.Tensor) -> TorsionBatch:
        """A copy with some fields replaced."""
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> TorsionBatch:
        """Move to a device; ``dtype`` applies to the float fields."""

        def move(x: torch.Tensor) -> torch.Tensor:
            if dtype is not None and x.is_floating_point():
                return x.to(device=device, dtype=dtype)
            return x.to(device=device)

        return TorsionBatch(**{f.name: move(getattr(self, f.name)) for f in dataclasses.fields(self)})


@dataclass(frozen=True)
class _Schedule:
    """The rotation order: torsions and moving-atom entries grouped by torsion position ``j``."""

    torsions: tuple[torch.Tensor, ...]  # per j: the torsion ids at position j (one per sample that has one)
    entries: tuple[torch.Tensor, ...]  # per j: indices into moving_atoms of those torsions' atoms
    slots: tuple[torch.Tensor, ...]  # per j: for each entry, the row of its torsion in torsions[j]

    @classmethod
    def of(cls, batch: TorsionBatch) -> _Schedule:
        t = batch.num_torsions
        if t == 0:
            return cls((), (), ())
        device = batch.torsion_batch.device
        counts = batch.torsions_per_graph
        start = torch.cumsum(counts, 0) - counts
        rank = torch.arange(t, device=device) - start[batch.torsion_batch]  # position within the sample
        order = torch.argsort(rank, stable=True)
        rank_counts = torch.bincount(rank)
        rank_start = torch.cumsum(rank_counts, 0) - rank_counts
        slot_of = torch.empty_like(order)
        slot_of[order] = torch.arange(t, device=device) - rank_start[rank[order]]
        per_rank = rank_counts.tolist()
        entry_rank = rank[batch.moving_torsion]
        entry_order = torch.argsort(entry_rank, stable=True)
        per_rank_entries = torch.bincount(entry_rank, minlength=len(per_rank)).tolist()
        torsions = torch.split(order, per_rank)
        entries = torch.split(entry_order, per_rank_entries)
        slots = tuple(slot_of[batch.moving_torsion[e]] for e in entries)
        return cls(tuple(torsions), tuple(entries), slots)


def _dihedral(xa: torch.Tensor, xb: torch.Tensor, xc: torch.Tensor, xd: torch.Tensor) -> torch.Tensor:
    b1, b2, b3 = xb - xa, xc - xb, xd - xc
    n1, n2 = torch.linalg.cross(b1, b2), torch.linalg.cross(b2, b3)
    y = (torch.linalg.cross(n1, n2) * b2).sum(-1) / b2.norm(dim=-1)
    x = (n1 * n2).sum(-1)
    phi = torch.atan2(y, x)
    return torch.where(phi >= math.pi, phi - 2 * math.pi, phi)


def dihedral(positions: torch.Tensor, abcd: torch.Tensor) -> torch.Tensor:
    """``[..., T]`` dihedral angles ``a–b–c–d`` in ``[-pi, pi)`` of ``positions`` ``[..., N, 3]`` (one structure or
    a batch of them) for ``abcd`` ``[T, 4]``.

    ``phi = atan2(|b2| b1 . (b2 x b3), (b1 x b2) . (b2 x b3))`` with ``b1 = x_b - x_a``, ``b2 = x_c - x_b``,
    ``b3 = x_d - x_c``: the IUPAC sign (clockwise looking from ``b`` to ``c`` is positive), as RDKit.
    """
    return _dihedral(*(positions[..., abcd[:, k], :] for k in range(4)))


def _rotate(v: torch.Tensor, axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues: ``v cos + (k x v) sin + k (k . v)(1 - cos)``, row-wise, ``axis`` unit."""
    cos, sin = torch.cos(angle).unsqueeze(-1), torch.sin(angle).unsqueeze(-1)
    kv = (axis * v).sum(-1, keepdim=True)
    return v * cos + torch.linalg.cross(axis, v) * sin + axis * kv * (1 - cos)


def torsion_positions(batch: TorsionBatch, phi: torch.Tensor) -> torch.Tensor:
    """``x(phi)`` ``[N, 3]``: the seeds with every torsion set to ``phi`` ``[T]`` (radians), centre removed.

    Differentiable in ``phi`` (and in ``batch.positions``); see the module docstring for the formula.
    """
    if phi.shape != (batch.num_torsions,):
        raise ValueError(f"phi must be [{batch.num_torsions}] (one angle per torsion), got {tuple(phi.shape)}")
    return _apply(batch, batch.positions, phi)


def _apply(batch: TorsionBatch, positions: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    x = positions.to(phi.dtype)
    schedule = batch._schedule
    for torsions, entries, slots in zip(schedule.torsions, schedule.entries, schedule.slots, strict=True):
        abcd = batch.torsion_atoms[torsions]
        xa, xb, xc, xd = (x[abcd[:, k]] for k in range(4))
        delta = phi[torsions] - _dihedral(xa, xb, xc, xd)
        axis = (xc - xb) / (xc - xb).norm(dim=-1, keepdim=True)
        atoms = batch.moving_atoms[entries]
        origin = xb[slots]
        moved = _rotate(x[atoms] - origin, axis[slots], delta[slots]) + origin
        x = x.index_copy(0, atoms, moved)
    centre = torch.zeros(batch.num_graphs, 3, dtype=x.dtype, device=x.device).index_add_(0, batch.node_batch, x)
    return x - (centre / batch.num_nodes.to(x.dtype).unsqueeze(-1))[batch.node_batch]


def torsion_gradient(batch: TorsionBatch, phi: torch.Tensor, grad_x: torch.Tensor) -> torch.Tensor:
    """``J(phi)^T grad_x`` ``[T]``: the torsion gradient from a Cartesian gradient ``grad_x`` ``[N, 3]``.

    ``grad_x`` is ``dE/dx`` (minus the forces) at ``x(phi)``; one autograd vector–Jacobian product through
    :func:`torsion_positions`. Works under ``torch.inference_mode()`` (it recomputes the map on fresh
    tensors); the result carries no graph.
    """
    if grad_x.shape != batch.positions.shape:
        raise ValueError(f"grad_x must be {tuple(batch.positions.shape)}, got {tuple(grad_x.shape)}")
    with torch.inference_mode(False), torch.enable_grad():
        work = batch if _autograd_ready(batch) else batch._clone()
        phi_ = phi.detach().clone().requires_grad_(True)
        x = _apply(work, work.positions.detach().clone(), phi_)
        (grad,) = torch.autograd.grad(x, phi_, grad_outputs=grad_x.detach().clone().to(x.dtype))
    return grad


def _autograd_ready(batch: TorsionBatch) -> bool:
    """No inference tensor (made under ``torch.inference_mode``) that autograd would have to save."""
    s = batch._schedule
    tensors = [getattr(batch, f.name) for f in dataclasses.fields(batch)] + [*s.torsions, *s.entries, *s.slots]
    return not any(t.is_inference() for t in tensors)


def torsion_torque(batch: TorsionBatch, positions: torch.Tensor, grad_x: torch.Tensor) -> torch.Tensor:
    """``[T]`` the torque of ``grad_x`` about each torsion bond: ``k_i . sum_{j in S_i} (x_j - x_b) x g_j``.

    At ``positions = x(phi)`` this equals :func:`torsion_gradient` whenever ``grad_x`` has no net force and
    no net torque (any energy invariant to rigid motions), without autograd.
    """
    b, c = batch.torsion_atoms[:, 1], batch.torsion_atoms[:, 2]
    axis = positions[c] - positions[b]
    axis = axis / axis.norm(dim=-1, keepdim=True)
    arm = positions[batch.moving_atoms] - positions[b][batch.moving_torsion]
    moment = torch.linalg.cross(arm, grad_x[batch.moving_atoms].to(positions.dtype))
    total = torch.zeros(batch.num_torsions, 3, dtype=positions.dtype, device=positions.device)
    total.index_add_(0, batch.moving_torsion, moment)
    return (total * axis).sum(-1)


def random_seed_index(
    systems: Sequence[TorsionSystem], samples_per_system: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``[len(systems) * K]`` long: a uniformly drawn seed for each of the ``K`` samples of every molecule."""
    counts = torch.tensor([s.num_seeds for s in systems], dtype=torch.float64).repeat_interleave(samples_per_system)
    return (torch.rand(counts.shape, generator=generator, dtype=torch.float64) * counts).long()


def collate_torsion_systems(
    systems: Sequence[TorsionSystem], seed_index: torch.Tensor | None = None, *, samples_per_system: int = 1
) -> TorsionBatch:
    """``K = samples_per_system`` samples of every molecule, sample ``g = i K + k`` being copy ``k`` of
    ``systems[i]``, started from its seed ``seed_index[g]`` (default: seed 0)."""
    if not systems:
        raise ValueError("cannot collate an empty list of molecules")
    if samples_per_system < 1:
        raise ValueError(f"samples_per_system must be >= 1, got {samples_per_system}")
    k = samples_per_system
    g = len(systems) * k
    if seed_index is None:
        seed_index = torch.zeros(g, dtype=torch.long)
    _check_long("seed_index", seed_index, (g,))
    copies = [s for s in systems for _ in range(k)]
    seeds = seed_index.tolist()
    for s, i in zip(copies, seeds, strict=True):
        _check(0 <= i < s.num_seeds, f"seed {i} requested for a molecule with {s.num_seeds} seeds")
    sizes = torch.tensor([s.num_atoms for s in copies], dtype=torch.long)
    offsets = (torch.cumsum(sizes, 0) - sizes).tolist()
    m = torch.tensor([s.num_torsions for s in copies], dtype=torch.long)
    moving_sizes = torch.cat([s.moving_ptr[1:] - s.moving_ptr[:-1] for s in copies])
    return TorsionBatch(
        positions=torch.cat([s.seed_positions[i] for s, i in zip(copies, seeds, strict=True)]),
        node_batch=torch.repeat_interleave(torch.arange(g), sizes),
        num_nodes=sizes,
        torsion_atoms=torch.cat([s.torsion_atoms + o for s, o in zip(copies, offsets, strict=True)]),
        torsion_batch=torch.repeat_interleave(torch.arange(g), m),
        moving_atoms=torch.cat([s.moving_atoms + o for s, o in zip(copies, offsets, strict=True)]),
        moving_torsion=torch.repeat_interleave(torch.arange(int(m.sum())), moving_sizes),
        node_attr=torch.cat([s.node_attr for s in copies]),
        edge_index=torch.cat([s.edge_index + o for s, o in zip(copies, offsets, strict=True)], dim=1),
        edge_attr=torch.cat([s.edge_attr for s in copies]),
        system_ids=torch.tensor([s.system_id for s in copies], dtype=torch.long),
        seed_index=seed_index.clone(),
    )
