"""Batched local minimization (L-BFGS or FIRE) for any :class:`~energy.protocol.EnergyModel`.

Every step calls ``model.evaluate`` ONCE on all structures that are still running, so a model that
parallelises across a batch (the xtb process pool, a GNN on a GPU) relaxes a whole conformer ensemble at
the speed of its slowest member. A structure stops when its largest atomic force is at most ``fmax``
(converged), when it runs out of steps, when (L-BFGS) not even a 1e-6 Å step lowers its energy (not
converged: the model's energy is noisier than its forces), or when the model marks it invalid: then it
keeps its last valid positions and energy, ``valid`` is false and the reason says at which step it failed.

Optimizers (per structure, vectorized over the ragged batch):

- ``lbfgs``: limited-memory BFGS (two-loop recursion, ``memory`` pairs, initial inverse Hessian scaled by
  ``s·y / y·y``), every step capped so no atom moves more than a trust length (``max_step`` Å at most).
  A step that raises the energy is rejected: the structure goes back, forgets its history and halves its
  trust length (doubled again, up to ``max_step``, after each accepted step).
- ``fire``: the Fast Inertial Relaxation Engine (Bitzek et al., PRL 97, 170201, 2006) with ASE's defaults
  and its step cap (the whole structure's displacement norm at most ``max_step`` Å).

For one molecule at a time through ASE's own optimizers, wrap the model in :class:`EnergyModelCalculator`.

Example::

    >>> from rdkit import Chem
    >>> from rdkit.Chem import AllChem
    >>> from energy.mmff import MmffEnergy
    >>> from molecules.structures import conformer_structures
    >>> mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    >>> _ = AllChem.EmbedMultipleConfs(mol, 3, randomSeed=7)
    >>> result = relax(MmffEnergy(), conformer_structures(mol), RelaxConfig(fmax=0.01))
    >>> bool(result.converged.all())
    True
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from ase.calculators.calculator import CalculationFailed, Calculator, all_changes

from energy.protocol import EnergyModel, EnergyResult, Structures

__all__ = ["EnergyModelCalculator", "RelaxConfig", "RelaxResult", "relax", "select_structures"]

log = logging.getLogger(__name__)

# a trust length below this (Å) after repeated energy rises: the structure cannot descend further
_MIN_TRUST = 1e-6


@dataclass(frozen=True, kw_only=True)
class RelaxConfig:
    """Settings of :func:`relax`.

    Attributes:
        fmax: converged when every atom's force norm is at most this (eV/Å).
        max_steps: at most this many steps (energy evaluations after the first) per structure.
        optimizer: ``"lbfgs"`` or ``"fire"``.
        max_step: the longest step (Å): per atom for L-BFGS, the whole structure's norm for FIRE (as ASE).
        memory: L-BFGS history length.
        energy_rise_tolerance: L-BFGS rejects a step that raises the energy by more than this (eV).
    """

    fmax: float = 0.05
    max_steps: int = 500
    optimizer: str = "lbfgs"
    max_step: float = 0.2
    memory: int = 20
    energy_rise_tolerance: float = 1e-6

    def __post_init__(self) -> None:
        if self.optimizer not in _STEPPERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {sorted(_STEPPERS)}")
        if not self.fmax > 0:
            raise ValueError(f"fmax must be positive (eV/Å), got {self.fmax}")
        if self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {self.max_steps}")
        if not self.max_step > 0:
            raise ValueError(f"max_step must be positive (Å), got {self.max_step}")
        if self.memory < 1:
            raise ValueError(f"memory must be >= 1, got {self.memory}")


@dataclass(frozen=True, kw_only=True)
class RelaxResult:
    """Per structure: final ``positions`` ``[N, 3]`` (Å), ``energies`` ``[G]`` (eV) with the starting
    ``initial_energies`` ``[G]``, ``max_force`` ``[G]`` (eV/Å, largest atomic force norm at the end),
    ``converged`` ``[G]``, ``steps`` ``[G]`` (long), ``valid`` ``[G]`` and a reason per invalid entry.

    An entry invalid from the start keeps its input positions and nan energies; one that became invalid
    during the run keeps its last valid positions and energy.
    """

    positions: torch.Tensor
    energies: torch.Tensor
    initial_energies: torch.Tensor
    max_force: torch.Tensor
    converged: torch.Tensor
    steps: torch.Tensor
    valid: torch.Tensor
    reasons: tuple[str | None, ...]


def _structure_index(num_atoms: torch.Tensor) -> torch.Tensor:
    """``[N]`` structure index of each atom. (numpy: torch's ``repeat_interleave`` enters a thread pool,
    which costs milliseconds per call on a busy machine, and this runs once per optimizer step.)"""
    counts = num_atoms.cpu().numpy()
    return torch.from_numpy(np.repeat(np.arange(counts.size), counts))


def select_structures(structures: Structures, keep: torch.Tensor, positions: torch.Tensor | None = None) -> Structures:
    """The structures where the ``[G]`` bool mask ``keep`` is true (optionally at other ``[N, 3]`` positions)."""
    pos = structures.positions if positions is None else positions
    batch = _structure_index(structures.num_atoms)
    nodes = keep.cpu()[batch]
    tables = structures.connection_tables
    kept = keep.cpu().tolist()
    return Structures(
        positions=pos[nodes.to(pos.device)],
        num_atoms=structures.num_atoms[keep.to(structures.num_atoms.device)],
        atomic_numbers=structures.atomic_numbers[nodes.to(structures.atomic_numbers.device)],
        total_charge=structures.total_charge[keep.to(structures.total_charge.device)],
        multiplicity=structures.multiplicity[keep.to(structures.multiplicity.device)],
        connection_tables=None if tables is None else tuple(t for t, k in zip(tables, kept, strict=True) if k),
    )


class _Padded:
    """Ragged ``[N, 3]`` <-> padded ``[G, 3 n_max]`` (zeros beyond each structure's atoms).

    The optimizers work on the padded layout: per-structure dot products and norms are plain reductions
    over the last axis.
    """

    def __init__(self, num_atoms: torch.Tensor) -> None:
        num_atoms = num_atoms.cpu().long()
        self.count = int(num_atoms.numel())
        self.n_max = int(num_atoms.max()) if self.count else 0
        self.batch = _structure_index(num_atoms)
        local = torch.arange(self.batch.numel()) - (torch.cumsum(num_atoms, 0) - num_atoms)[self.batch]
        self.index = self.batch * self.n_max + local

    def pad(self, v: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(self.count * self.n_max, 3, dtype=v.dtype)
        out[self.index] = v
        return out.view(self.count, 3 * self.n_max)

    def unpad(self, p: torch.Tensor) -> torch.Tensor:
        return p.reshape(-1, 3)[self.index]

    def nodes(self, mask: torch.Tensor) -> torch.Tensor:
        """``[G]`` -> ``[N]`` bool."""
        return mask[self.batch]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1)


def _max_atom_norm(p: torch.Tensor) -> torch.Tensor:
    """``[G]`` largest per-atom norm of padded ``[G, 3 n_max]`` vectors (0 without atoms)."""
    if p.shape[1] == 0:
        return torch.zeros(p.shape[0], dtype=p.dtype)
    return p.view(p.shape[0], -1, 3).norm(dim=-1).amax(-1)


class _Stepper(Protocol):
    """One optimizer's state for a whole batch (padded ``[G, L]`` vectors, ``[G]`` masks)."""

    def propose(self, grad: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Displacement from the gradient at the current positions (zero where not ``active``)."""
        ...

    def accept(self, energy_old: torch.Tensor, energy_new: torch.Tensor) -> torch.Tensor:
        """``[G]`` whether each evaluated trial is taken."""
        ...

    def update(
        self, step: torch.Tensor, grad_old: torch.Tensor, grad_new: torch.Tensor, accepted: torch.Tensor
    ) -> None:
        """Learn from the trial step (structures not evaluated count as not accepted, with a zero step)."""
        ...

    def stalled(self) -> torch.Tensor:
        """``[G]`` structures that can make no more progress."""
        ...


class _Lbfgs:
    """Batched L-BFGS with a per-atom trust length and rejection of uphill steps."""

    initial_curvature: ClassVar[float] = 70.0  # eV/Å², ASE's default guess of the Hessian scale

    def __init__(self, count: int, width: int, config: RelaxConfig) -> None:
        self.config = config
        m = config.memory
        self.s = torch.zeros(m, count, width, dtype=torch.float64)
        self.y = torch.zeros(m, count, width, dtype=torch.float64)
        self.rho = torch.zeros(m, count, dtype=torch.float64)
        self.h0 = torch.full((count,), 1.0 / self.initial_curvature, dtype=torch.float64)
        self.trust = torch.full((count,), config.max_step, dtype=torch.float64)
        self.slot = 0  # next slot of the ring buffer
        self.filled = 0

    def propose(self, grad: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        m = self.config.memory
        newest_first = [(self.slot - 1 - k) % m for k in range(self.filled)]
        q = grad.clone()
        alphas = []
        for i in newest_first:
            a = self.rho[i] * _dot(self.s[i], q)
            q -= a[:, None] * self.y[i]
            alphas.append(a)
        r = self.h0[:, None] * q
        for i, a in zip(reversed(newest_first), reversed(alphas), strict=True):
            b = self.rho[i] * _dot(self.y[i], r)
            r += (a - b)[:, None] * self.s[i]
        direction = -r
        uphill = (_dot(direction, grad) >= 0) & active  # a misleading history: restart from steepest descent
        if bool(uphill.any()):
            self._forget(uphill)
            direction = torch.where(uphill[:, None], -self.h0[:, None] * grad, direction)
        scale = torch.clamp(self.trust / _max_atom_norm(direction).clamp_min(1e-300), max=1.0)
        return direction * (scale * active)[:, None]

    def _forget(self, which: torch.Tensor) -> None:
        self.rho[:, which] = 0.0
        self.h0 = torch.where(which, 1.0 / self.initial_curvature, self.h0)

    def accept(self, energy_old: torch.Tensor, energy_new: torch.Tensor) -> torch.Tensor:
        return energy_new <= energy_old + self.config.energy_rise_tolerance

    def update(
        self, step: torch.Tensor, grad_old: torch.Tensor, grad_new: torch.Tensor, accepted: torch.Tensor
    ) -> None:
        y = grad_new - grad_old
        sy, yy = _dot(step, y), _dot(y, y)
        good = accepted & (sy > 1e-12)  # the curvature condition keeps the inverse Hessian positive
        self.s[self.slot] = torch.where(good[:, None], step, 0.0)
        self.y[self.slot] = torch.where(good[:, None], y, 0.0)
        self.rho[self.slot] = torch.where(good, 1.0 / sy.clamp_min(1e-300), 0.0)
        self.h0 = torch.where(good & (yy > 0), sy / yy.clamp_min(1e-300), self.h0)
        self.slot = (self.slot + 1) % self.config.memory
        self.filled = min(self.filled + 1, self.config.memory)
        rejected = ~accepted & (_max_atom_norm(step) > 0)
        self.trust = torch.where(accepted, torch.clamp(self.trust * 2, max=self.config.max_step), self.trust)
        self.trust = torch.where(rejected, self.trust / 2, self.trust)
        if bool(rejected.any()):
            self._forget(rejected)

    def stalled(self) -> torch.Tensor:
        return self.trust < _MIN_TRUST


class _Fire:
    """Batched FIRE with ASE's parameters (forces as accelerations, unit masses)."""

    dt_start: ClassVar[float] = 0.1
    dt_max: ClassVar[float] = 1.0
    n_min: ClassVar[int] = 5
    f_inc: ClassVar[float] = 1.1
    f_dec: ClassVar[float] = 0.5
    a_start: ClassVar[float] = 0.1
    f_a: ClassVar[float] = 0.99

    def __init__(self, count: int, width: int, config: RelaxConfig) -> None:
        self.config = config
        self.v = torch.zeros(count, width, dtype=torch.float64)
        self.dt = torch.full((count,), self.dt_start, dtype=torch.float64)
        self.a = torch.full((count,), self.a_start, dtype=torch.float64)
        self.n_pos = torch.zeros(count, dtype=torch.long)
        self.started = False

    def propose(self, grad: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        f = -grad
        if self.started:
            downhill = (_dot(f, self.v) > 0) & active
            uphill = ~downhill & active
            v_norm, f_norm = _dot(self.v, self.v).sqrt(), _dot(f, f).sqrt().clamp_min(1e-300)
            mixed = (1 - self.a)[:, None] * self.v + (self.a * v_norm / f_norm)[:, None] * f
            self.v = torch.where(downhill[:, None], mixed, torch.zeros_like(self.v))
            speed_up = downhill & (self.n_pos > self.n_min)
            self.dt = torch.where(speed_up, torch.clamp(self.dt * self.f_inc, max=self.dt_max), self.dt)
            self.a = torch.where(speed_up, self.a * self.f_a, self.a)
            self.n_pos = torch.where(downhill, self.n_pos + 1, torch.where(uphill, 0, self.n_pos))
            self.a = torch.where(uphill, self.a_start, self.a)
            self.dt = torch.where(uphill, self.dt * self.f_dec, self.dt)
        self.started = True
        self.v = self.v + self.dt[:, None] * f
        dr = self.dt[:, None] * self.v
        scale = torch.clamp(self.config.max_step / _dot(dr, dr).sqrt().clamp_min(1e-300), max=1.0)
        return dr * (scale * active)[:, None]

    def accept(self, energy_old: torch.Tensor, energy_new: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(energy_new, dtype=torch.bool)

    def update(
        self, step: torch.Tensor, grad_old: torch.Tensor, grad_new: torch.Tensor, accepted: torch.Tensor
    ) -> None:
        return None

    def stalled(self) -> torch.Tensor:
        return torch.zeros_like(self.dt, dtype=torch.bool)


_STEPPERS: dict[str, Callable[[int, int, RelaxConfig], _Stepper]] = {"lbfgs": _Lbfgs, "fire": _Fire}


def _evaluate(model: EnergyModel, structures: Structures, keep: torch.Tensor, x: torch.Tensor) -> EnergyResult:
    sub = select_structures(
        structures, keep, x.to(device=structures.positions.device, dtype=structures.positions.dtype)
    )
    result = model.evaluate(sub)
    if result.valid.shape != (sub.num_structures,) or len(result.reasons) != sub.num_structures:
        raise RuntimeError(f"{model.name} returned {result.valid.shape[0]} results for {sub.num_structures} structures")
    return result


def relax(model: EnergyModel, structures: Structures, config: RelaxConfig | None = None) -> RelaxResult:
    """Minimize every structure's energy under ``model`` from its current positions (see the module doc)."""
    config = config or RelaxConfig()
    if structures.positions.ndim != 2 or structures.positions.shape[1] != 3:
        raise ValueError(f"relaxation needs 3-D positions [N, 3], got {tuple(structures.positions.shape)}")
    layout = _Padded(structures.num_atoms)
    g = layout.count
    out_dtype, out_device = structures.positions.dtype, structures.positions.device
    x0 = structures.positions.detach().to("cpu", torch.float64)
    first = _evaluate(model, structures, torch.ones(g, dtype=torch.bool), x0)
    valid = first.valid.cpu().clone()
    reasons = list(first.reasons)
    x = layout.pad(x0)
    energy = first.energies.detach().to("cpu", torch.float64).clone()
    grad = layout.pad(-first.forces.detach().to("cpu", torch.float64))
    initial = energy.clone()
    steps = torch.zeros(g, dtype=torch.long)
    converged = valid & (_max_atom_norm(grad) <= config.fmax)
    stepper = _STEPPERS[config.optimizer](g, x.shape[1], config)
    active = valid & ~converged
    while True:
        active &= steps < config.max_steps
        if not bool(active.any()):
            break
        dx = stepper.propose(grad, active)
        trial = _evaluate(model, structures, active, layout.unpad(x + dx))
        idx = active.nonzero().flatten()
        steps[idx] += 1
        ok = torch.zeros(g, dtype=torch.bool)
        ok[idx] = trial.valid.cpu()
        for k, good, reason in zip(idx.tolist(), trial.valid.tolist(), trial.reasons, strict=True):
            if not good:
                valid[k] = False
                reasons[k] = f"invalid after step {int(steps[k])} ({reason}); positions are the last valid ones"
        energy_new = energy.clone()
        energy_new[idx] = trial.energies.detach().to("cpu", torch.float64)
        grad_flat = layout.unpad(grad)
        grad_flat[layout.nodes(active)] = -trial.forces.detach().to("cpu", torch.float64)
        grad_new = layout.pad(grad_flat)
        accepted = ok & stepper.accept(energy, energy_new)
        stepper.update(dx, grad, grad_new, accepted)
        x = torch.where(accepted[:, None], x + dx, x)
        grad = torch.where(accepted[:, None], grad_new, grad)
        energy = torch.where(accepted, energy_new, energy)
        converged |= accepted & (_max_atom_norm(grad) <= config.fmax)
        active &= valid & ~converged & ~stepper.stalled()
    log.debug(
        "relaxed %d structures: %d converged, at most %d steps", g, int(converged.sum()), int(steps.max()) if g else 0
    )
    return RelaxResult(
        positions=layout.unpad(x).to(device=out_device, dtype=out_dtype),
        energies=energy.to(out_dtype),
        initial_energies=initial.to(out_dtype),
        max_force=torch.where(first.valid.cpu(), _max_atom_norm(grad), float("nan")).to(out_dtype),
        converged=converged & valid,
        steps=steps,
        valid=valid,
        reasons=tuple(reasons),
    )


class EnergyModelCalculator(Calculator):
    """An ASE calculator around any :class:`~energy.protocol.EnergyModel` (one structure per call).

    Charge and spin multiplicity come from the arguments, else from ``atoms.info["charge"]`` and
    ``atoms.info["spin"]`` (fairchem's convention: ``spin`` is the multiplicity ``2S + 1``), else 0 and 1.
    ``connection_table`` is the molecule's mol block for models that need bonds (MMFF). An invalid
    evaluation raises ASE's ``CalculationFailed`` with the model's reason.

    Example::

        >>> from ase.build import molecule
        >>> from ase.optimize import BFGS
        >>> atoms = molecule("H2O")
        >>> atoms.calc = EnergyModelCalculator(some_model)  # doctest: +SKIP
        >>> BFGS(atoms).run(fmax=0.05)  # doctest: +SKIP
    """

    implemented_properties = ["energy", "forces"]  # noqa: RUF012 (ASE declares it an instance attribute)

    def __init__(
        self,
        model: EnergyModel,
        *,
        charge: int | None = None,
        multiplicity: int | None = None,
        connection_table: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.charge = charge
        self.multiplicity = multiplicity
        self.connection_table = connection_table

    def calculate(
        self, atoms: Any = None, properties: Any = ("energy", "forces"), system_changes: Any = all_changes
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        assert self.atoms is not None
        info = self.atoms.info
        charge = self.charge if self.charge is not None else int(info.get("charge", 0))
        mult = self.multiplicity if self.multiplicity is not None else int(info.get("spin", 1))
        n = len(self.atoms)
        structures = Structures(
            positions=torch.as_tensor(np.asarray(self.atoms.get_positions()), dtype=torch.float64),
            num_atoms=torch.tensor([n]),
            atomic_numbers=torch.as_tensor(self.atoms.get_atomic_numbers(), dtype=torch.long),
            total_charge=torch.tensor([charge]),
            multiplicity=torch.tensor([mult]),
            connection_tables=None if self.connection_table is None else (self.connection_table,),
        )
        result = self.model.evaluate(structures)
        if not bool(result.valid[0]):
            raise CalculationFailed(f"{self.model.name}: {result.reasons[0]}")
        self.results = {
            "energy": float(result.energies[0]),
            "forces": result.forces.detach().cpu().double().numpy().reshape(n, 3),
        }
