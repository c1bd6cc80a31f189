"""GFN2-xTB (default) and GFN1-xTB energies and forces through tblite.

:class:`XtbEnergy` is the :class:`~energy.protocol.EnergyModel`: it checks the batch
(:mod:`energy.validation`), converts Å → Bohr, hands one single point per structure to an executor
(:mod:`energy.pool`: worker processes with a per-call timeout, or in-process) and converts the
results Hartree → eV, Hartree/Bohr → eV/Å (:mod:`energy.units`). Total charge and multiplicity come
from the :class:`~energy.protocol.Structures` (``uhf = multiplicity − 1`` unpaired electrons).

:class:`TbliteEvaluator` (in :mod:`energy.xtb_evaluator`, which worker processes import without torch) is the
per-process part: it keeps one tblite calculator per molecule
(elements, charge, unpaired electrons; the method and settings are fixed per evaluator), moves its
atoms with ``update`` and starts each SCF from that molecule's previous converged wavefunction.
Calculator construction is cheap (< 1 ms), so what reuse buys is the warm start, and that depends on
how close the geometries are (measured on drug-sized molecules, one core): ~1.04× less CPU for
independent ETKDG conformers, 1.1–1.3× for relaxation-like steps of ~0.02 Å, most when a geometry
repeats. It changes results only within the SCF tolerance (~1e-8 Hartree, ~1e-5 Hartree/Bohr at
``accuracy=1``). ``reuse_calculators=False`` builds a fresh calculator with a cold start for every
structure, which makes each result independent of what was evaluated before. With reuse, what a worker
evaluated before depends on which worker took which structure: :class:`XtbEnergy` therefore hands
structure ``i`` of a batch to worker ``i % workers`` (``schedule="static"``), so the same calls give
bit-identical results run after run (a relaxation is reproducible); ``schedule="dynamic"`` (next free
worker) balances batches of very different molecule sizes better, at the price of that reproducibility.

In-process (``workers=0``) tblite runs with this process's OpenMP threads (shared with torch when torch
is imported first: ``torch.set_num_threads`` sets them). More than one thread does not speed up
drug-sized molecules and, on a busy machine, made them ~10× slower in our measurements (spinning
OpenMP threads competing for the cores); worker processes are always single-threaded.

A tblite error (SCF not converged within ``max_iterations``, an electron count tblite rejects)
marks that structure invalid with tblite's message; a worker crash or a call past ``timeout_s``
does the same for its structure; the rest of the batch is returned. tblite prints nothing
(verbosity 0; its log lines go to this module's logger at DEBUG).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from energy.pool import Executor, InProcess, PoolConfig, ProcessPool, TaskFailure
from energy.protocol import EnergyResult, Structures
from energy.units import (
    angstrom_to_bohr,
    gradient_hartree_bohr_to_forces_ev_angstrom,
    hartree_to_ev,
)
from energy.validation import (
    DEFAULT_MIN_DISTANCE_ANGSTROM,
    Evaluated,
    StructureLimits,
    assemble_result,
    atom_slices,
    structure_problems,
)
from energy.xtb_evaluator import (
    SOLVATION_MODELS,
    SUPPORTED_METHODS,
    TbliteEvaluator,
    XtbSettings,
    XtbSinglePoint,
    XtbTask,
)

__all__ = [
    "SOLVATION_MODELS",
    "SUPPORTED_ELEMENTS",
    "SUPPORTED_METHODS",
    "TbliteEvaluator",
    "XtbEnergy",
    "XtbSettings",
    "XtbSinglePoint",
    "XtbTask",
]

log = logging.getLogger(__name__)

SUPPORTED_ELEMENTS = frozenset(range(1, 87))
"""GFN1- and GFN2-xTB are parametrized for H–Rn (Z ≤ 86)."""


class XtbEnergy:
    """GFN2-xTB (or GFN1-xTB) energies (eV) and forces (eV/Å) for a batch of molecules.

    Args:
        method, solvent, solvation_model, accuracy, max_iterations, electronic_temperature_k,
        reuse_calculators: see :class:`XtbSettings`.
        workers: worker processes (each single-threaded); ``0`` evaluates in this process, with no
            timeout and no protection against a crashing tblite.
        timeout_s: wall-clock limit per structure in worker processes (``None``: none).
        schedule: how structures are assigned to workers, ``"static"`` (reproducible, see the module
            docs) or ``"dynamic"`` (:class:`~energy.pool.PoolConfig`).
        max_atoms: structures with more atoms are invalid (``None``: no limit). A GFN2-xTB single
            point of a 300-atom alkane takes ~5 s on one core, growing ~n³.
        min_distance_angstrom: closer atom pairs are invalid as coincident (see :mod:`energy.validation`).

    Use as a context manager (or call :meth:`close`) to stop the worker processes.

    Example::

        with XtbEnergy(workers=2) as model:
            result = model.evaluate(conformer_structures(mol))
    """

    def __init__(
        self,
        *,
        method: str = "GFN2-xTB",
        solvent: str | None = None,
        solvation_model: str = "alpb",
        accuracy: float = 1.0,
        max_iterations: int = 250,
        electronic_temperature_k: float = 300.0,
        reuse_calculators: bool = True,
        workers: int = 1,
        timeout_s: float | None = 120.0,
        schedule: str = "static",
        max_atoms: int | None = None,
        min_distance_angstrom: float = DEFAULT_MIN_DISTANCE_ANGSTROM,
    ) -> None:
        self.settings = XtbSettings(
            method=method,
            solvent=solvent,
            solvation_model=solvation_model,
            accuracy=accuracy,
            max_iterations=max_iterations,
            electronic_temperature_k=electronic_temperature_k,
            reuse_calculators=reuse_calculators,
        )
        self.limits = StructureLimits(
            model=self.settings.label,
            supported_elements=SUPPORTED_ELEMENTS,
            max_atoms=max_atoms,
            min_distance_angstrom=min_distance_angstrom,
        )
        if workers < 0:
            raise ValueError(f"workers must be >= 0 (0: in this process), got {workers}")
        evaluator = TbliteEvaluator(self.settings)
        _check_solvent(evaluator)
        self._executor: Executor[XtbTask, XtbSinglePoint]
        if workers == 0:
            self._executor = InProcess(evaluator)
        else:
            self._executor = ProcessPool(evaluator, PoolConfig(workers=workers, timeout_s=timeout_s, schedule=schedule))

    @property
    def name(self) -> str:
        return self.settings.label

    def evaluate(self, structures: Structures) -> EnergyResult:
        problems = structure_problems(structures, self.limits)
        positions = structures.positions.detach().cpu().to(torch.float64).numpy()
        numbers = structures.atomic_numbers.cpu().numpy().astype(np.int32)
        charges = structures.total_charge.cpu().tolist()
        multiplicities = structures.multiplicity.cpu().tolist()
        slices = atom_slices(structures)
        todo = [k for k, problem in enumerate(problems) if problem is None]
        tasks = [
            XtbTask(
                numbers=numbers[slices[k]],
                positions_bohr=angstrom_to_bohr(positions[slices[k]]),
                charge=int(charges[k]),
                uhf=int(multiplicities[k]) - 1,
            )
            for k in todo
        ]
        outcomes: list[Evaluated | str] = [problem or "" for problem in problems]
        for k, answer in zip(todo, self._executor.map(tasks), strict=True):
            if isinstance(answer, TaskFailure):
                outcomes[k] = f"{self.name}: {answer.reason}"
            else:
                outcomes[k] = Evaluated(
                    energy_ev=hartree_to_ev(answer.energy_hartree),
                    forces_ev_per_angstrom=gradient_hartree_bohr_to_forces_ev_angstrom(answer.gradient_hartree_bohr),
                )
        return assemble_result(structures, outcomes)

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the running workers (``[]`` in-process or before the first evaluation)."""
        return self._executor.worker_pids

    def close(self) -> None:
        """Stop the worker processes (the next :meth:`evaluate` restarts them)."""
        self._executor.close()

    def __enter__(self) -> XtbEnergy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_solvent(evaluator: TbliteEvaluator) -> None:
    """Fail at construction, not per structure, on a solvent tblite does not know."""
    solvent = evaluator.settings.solvent
    if solvent is None:
        return
    try:
        evaluator.new_calculator(np.array([1, 1], dtype=np.int32), np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.4]]), 0, 0)
    except Exception as exc:
        model = evaluator.settings.solvation_model
        raise ValueError(f"tblite cannot use solvent {solvent!r} with {model}: {exc}") from exc
