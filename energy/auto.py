"""The ``auto`` energy model: ANI-2xt where it applies, GFN2-xTB everywhere else, chosen per structure.

:func:`choose_energy_model` is the rule: a neutral (total charge 0), closed-shell (multiplicity 1)
molecule made only of H, C, N, O, F, S and Cl goes to ``"ani2xt"`` (fast, close to DFT for such
molecules); anything else (ions, radicals, Br, I, P, metals, …) goes to ``"xtb"`` (GFN2-xTB, which
covers charge, spin and Z ≤ 86). :class:`AutoEnergy` applies it to each structure of a batch, evaluates
each group with its model in one call, and reports the choice (:meth:`AutoEnergy.model_names`) so front
ends can record in provenance which model scored each structure.

Example::

    >>> choose_energy_model([6, 6, 8, 1, 1, 1, 1, 1, 1], total_charge=0, multiplicity=1)
    'ani2xt'
    >>> choose_energy_model([6, 35, 1, 1, 1], total_charge=0, multiplicity=1)
    'xtb'
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from energy.ani2xt import ANI2XT_ELEMENTS
from energy.protocol import EnergyModel, EnergyResult, Structures
from energy.registry import build_energy_model
from energy.relax import select_structures
from energy.validation import atom_slices

__all__ = ["ANI2XT", "XTB", "AutoEnergy", "choose_energy_model"]

log = logging.getLogger(__name__)

ANI2XT = "ani2xt"
XTB = "xtb"
_ANI2XT_SET = frozenset(ANI2XT_ELEMENTS)


def choose_energy_model(atomic_numbers: Iterable[int] | torch.Tensor, total_charge: int, multiplicity: int) -> str:
    """``"ani2xt"`` for a neutral closed-shell molecule of H, C, N, O, F, S, Cl only; ``"xtb"`` otherwise
    (registry names, :mod:`energy.registry`)."""
    numbers = atomic_numbers.tolist() if isinstance(atomic_numbers, torch.Tensor) else list(atomic_numbers)
    if int(total_charge) == 0 and int(multiplicity) == 1 and {int(z) for z in numbers} <= _ANI2XT_SET:
        return ANI2XT
    return XTB


class AutoEnergy:
    """Per-structure dispatch between ANI-2xt and GFN2-xTB (see the module docs).

    Args:
        ani2xt_options: keyword options for the ``ani2xt`` model (``device``, ``dtype``, …).
        xtb_options: keyword options for the ``xtb`` model (``workers``, ``solvent``, …).

    Each model is built on first use (a batch of organic molecules never starts xtb workers) and reused.
    Use as a context manager (or call :meth:`close`) to stop xtb's worker processes.
    """

    def __init__(
        self, *, ani2xt_options: Mapping[str, Any] | None = None, xtb_options: Mapping[str, Any] | None = None
    ) -> None:
        self._options: dict[str, dict[str, Any]] = {ANI2XT: dict(ani2xt_options or {}), XTB: dict(xtb_options or {})}
        self._models: dict[str, EnergyModel] = {}

    @property
    def name(self) -> str:
        return "auto"

    def model(self, name: str) -> EnergyModel:
        """The ``"ani2xt"`` or ``"xtb"`` model, built now if not yet."""
        if name not in self._options:
            raise ValueError(f"auto dispatches to {sorted(self._options)}, not {name!r}")
        if name not in self._models:
            self._models[name] = build_energy_model(name, **self._options[name])
        return self._models[name]

    def model_names(self, structures: Structures) -> list[str]:
        """The registry name of the model that evaluates (evaluated) each structure."""
        numbers = structures.atomic_numbers.cpu()
        charges = structures.total_charge.cpu().tolist()
        multiplicities = structures.multiplicity.cpu().tolist()
        return [
            choose_energy_model(numbers[rows], int(charges[k]), int(multiplicities[k]))
            for k, rows in enumerate(atom_slices(structures))
        ]

    def evaluate(self, structures: Structures) -> EnergyResult:
        """Energies ``[G]`` (eV) and forces ``[N, 3]`` (eV/Å), each structure from its chosen model."""
        like = structures.positions
        g = structures.num_structures
        energies = torch.full((g,), float("nan"), dtype=like.dtype, device=like.device)
        forces = torch.zeros_like(like)
        valid = torch.zeros(g, dtype=torch.bool, device=like.device)
        reasons: list[str | None] = [None] * g
        names = self.model_names(structures)
        owner = torch.repeat_interleave(torch.arange(g), structures.num_atoms.cpu())
        for name in sorted(set(names)):
            keep = torch.tensor([n == name for n in names], dtype=torch.bool)
            result = self.model(name).evaluate(select_structures(structures, keep))
            index = keep.nonzero().flatten()
            atoms = keep[owner]
            energies[index.to(like.device)] = result.energies.to(device=like.device, dtype=like.dtype)
            forces[atoms.to(like.device)] = result.forces.to(device=like.device, dtype=like.dtype)
            valid[index.to(like.device)] = result.valid.to(like.device)
            for k, reason in zip(index.tolist(), result.reasons, strict=True):
                reasons[k] = reason
        log.debug("auto: %s", {n: names.count(n) for n in set(names)})
        return EnergyResult(energies=energies, forces=forces, valid=valid, reasons=tuple(reasons))

    def close(self) -> None:
        """Stop the models' worker processes (xtb); they restart on the next :meth:`evaluate`."""
        for model in self._models.values():
            close = getattr(model, "close", None)
            if close is not None:
                close()

    def __enter__(self) -> AutoEnergy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
