"""The per-process part of :mod:`energy.xtb`: the settings of a tblite single point, one task in tblite's units
and :class:`TbliteEvaluator`, which keeps one tblite calculator per molecule (see :mod:`energy.xtb` for how reuse
and warm starts behave).

Worker processes of :class:`energy.xtb.XtbEnergy` unpickle the evaluator from this module, so it imports numpy and
tblite only: a worker starts without importing torch (seconds of CPU and ~200 MB of memory less per worker).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from tblite.interface import Calculator, Result

from energy.units import kelvin_to_hartree

__all__ = ["SOLVATION_MODELS", "SUPPORTED_METHODS", "TbliteEvaluator", "XtbSettings", "XtbSinglePoint", "XtbTask"]

log = logging.getLogger("energy.xtb")  # tblite's lines stay where energy.xtb documents them

SUPPORTED_METHODS = ("GFN2-xTB", "GFN1-xTB")
SOLVATION_MODELS = ("alpb", "gbsa")


@dataclass(frozen=True, kw_only=True)
class XtbSettings:
    """What a tblite single point computes.

    Attributes:
        method: ``"GFN2-xTB"`` or ``"GFN1-xTB"``.
        solvent: a solvent name tblite knows (``"water"``, ``"methanol"``, ``"dmso"``, …) for implicit
            solvation, ``None`` for the gas phase.
        solvation_model: ``"alpb"`` (analytical linearized Poisson–Boltzmann) or ``"gbsa"``.
        accuracy: tblite's SCF accuracy factor; smaller is tighter (1.0 is tblite's default).
        max_iterations: SCF cycles before a structure is reported as not converged.
        electronic_temperature_k: Fermi smearing temperature in K (tblite's default is 300 K).
        reuse_calculators: keep one calculator per molecule and warm-start its SCF (see module docs).
        max_cached_calculators: molecules kept per process (least recently used ones are dropped).
    """

    method: str = "GFN2-xTB"
    solvent: str | None = None
    solvation_model: str = "alpb"
    accuracy: float = 1.0
    max_iterations: int = 250
    electronic_temperature_k: float = 300.0
    reuse_calculators: bool = True
    max_cached_calculators: int = 32

    def __post_init__(self) -> None:
        if self.method not in SUPPORTED_METHODS:
            raise ValueError(f"unknown xTB method {self.method!r}; choose one of {list(SUPPORTED_METHODS)}")
        if self.solvation_model not in SOLVATION_MODELS:
            raise ValueError(
                f"unknown solvation model {self.solvation_model!r}; choose one of {list(SOLVATION_MODELS)}"
            )
        if not self.accuracy > 0:
            raise ValueError(f"accuracy must be > 0, got {self.accuracy}")
        if self.max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1, got {self.max_iterations}")
        if not self.electronic_temperature_k >= 0:
            raise ValueError(f"electronic_temperature_k must be >= 0, got {self.electronic_temperature_k}")
        if self.max_cached_calculators < 1:
            raise ValueError(f"max_cached_calculators must be >= 1, got {self.max_cached_calculators}")

    @property
    def label(self) -> str:
        """``"GFN2-xTB"``, or ``"GFN2-xTB/ALPB(water)"`` with a solvent."""
        return self.method if self.solvent is None else f"{self.method}/{self.solvation_model.upper()}({self.solvent})"


@dataclass(frozen=True, slots=True)
class XtbTask:
    """One single point, in tblite's units: atomic numbers, positions in Bohr, charge, unpaired electrons."""

    numbers: np.ndarray
    positions_bohr: np.ndarray
    charge: int
    uhf: int


@dataclass(frozen=True, slots=True)
class XtbSinglePoint:
    """tblite's answer in atomic units: energy (Hartree) and gradient ``[n, 3]`` (Hartree/Bohr)."""

    energy_hartree: float
    gradient_hartree_bohr: np.ndarray


def _tblite_log(message: str) -> None:
    log.debug("tblite: %s", message)


class TbliteEvaluator:
    """``XtbTask -> XtbSinglePoint`` with one cached calculator per molecule (per process).

    Pickles as its settings only: every process that unpickles it starts with an empty cache.
    """

    def __init__(self, settings: XtbSettings) -> None:
        self.settings = settings
        self._cache: OrderedDict[tuple[bytes, int, int], tuple[Calculator, Result]] = OrderedDict()

    def __getstate__(self) -> dict[str, XtbSettings]:
        return {"settings": self.settings}

    def __setstate__(self, state: dict[str, XtbSettings]) -> None:
        self.settings = state["settings"]
        self._cache = OrderedDict()

    @property
    def cached_molecules(self) -> int:
        """Calculators held in this process (one per molecule: elements, charge, unpaired electrons)."""
        return len(self._cache)

    def new_calculator(self, numbers: np.ndarray, positions_bohr: np.ndarray, charge: int, uhf: int) -> Calculator:
        """A silent tblite calculator with these settings."""
        s = self.settings
        calc = Calculator(
            s.method, numbers, positions_bohr, charge=float(charge), uhf=uhf, color=False, logger=_tblite_log
        )
        calc.set("verbosity", 0)
        calc.set("accuracy", s.accuracy)
        calc.set("max-iter", s.max_iterations)
        calc.set("temperature", kelvin_to_hartree(s.electronic_temperature_k))
        if s.solvent is not None:
            calc.add(f"{s.solvation_model}-solvation", s.solvent)
        return calc

    def __call__(self, task: XtbTask) -> XtbSinglePoint:
        if not self.settings.reuse_calculators:
            calc = self.new_calculator(task.numbers, task.positions_bohr, task.charge, task.uhf)
            return _single_point(calc.singlepoint())
        key = (task.numbers.tobytes(), task.charge, task.uhf)
        cached = self._cache.pop(key, None)  # a failing calculation leaves it out of the cache
        if cached is None:
            calc = self.new_calculator(task.numbers, task.positions_bohr, task.charge, task.uhf)
            result = calc.singlepoint()
        else:
            calc, result = cached
            calc.update(task.positions_bohr)
            result = calc.singlepoint(result)  # warm start from the previous wavefunction
        self._cache[key] = (calc, result)
        while len(self._cache) > self.settings.max_cached_calculators:
            self._cache.popitem(last=False)
        return _single_point(result)


def _single_point(result: Result) -> XtbSinglePoint:
    return XtbSinglePoint(
        energy_hartree=float(result.get("energy")),
        gradient_hartree_bohr=np.array(result.get("gradient"), dtype=np.float64),
    )
