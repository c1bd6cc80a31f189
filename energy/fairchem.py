"""fairchem-core GNN potentials (UMA, eSEN) from a local checkpoint, batched, on CPU or CUDA.

The checkpoint is loaded with fairchem's own loader, :func:`fairchem.core.units.mlip_unit.load_predict_unit`
(the one behind ``FAIRChemCalculator``), never with ``pretrained_mlip.get_predict_unit(name)``, which
downloads: nothing here touches the network. Structures are converted with ``AtomicData.from_ase`` using
the arguments ``FAIRChemCalculator`` uses (internal radius graph, ``charge``/``spin`` read from
``atoms.info``, the task name as dataset) and a whole batch goes through one ``predict`` call
(``atomicdata_list_to_batch``).

Units: fairchem's molecular models are trained on eV and eV/Å (OMol25 energies in eV, forces in eV/Å),
and ``MLIPPredictUnit.predict`` returns total energies in eV (element references added back) and forces
``-dE/dx`` in eV/Å, so no conversion is applied. Forces are autograd gradients for conservative models;
for a direct-force checkpoint they are the model's direct predictions (fairchem warns).

Inference settings are chosen explicitly, not taken from fairchem's presets: ``"default"`` is UMA Nitro
falling back to ``"multigpu"`` (``merge_mole`` + ``torch.compile`` + TF32) and ``"high-precision"`` also
compiles and merges the experts; both assume one fixed composition/charge/spin per predictor and compiling
costs minutes on the first CPU call. Conformer batches mix molecules, so the experts stay unmerged and
``torch.compile`` is off on every device (fairchem's ``"batch"`` preset), TF32 is off, activation
checkpointing is off (it saves memory only for 10k+ atom systems), the execution backend is ``"general"``
and the base dtype is the configured one (``float64`` for finite-difference checks and tight relaxations).
Only the checkpoint's own energy and forces tasks run (no automatic stress task).

Charge and spin: for the ``omol`` task the total charge and the spin multiplicity ``2S + 1`` of each
structure are passed (fairchem's ``spin`` *is* the multiplicity). The other UMA tasks (``omat``, ``oc20``,
...) were trained with charge 0 and spin 0 ("no spin"); they receive exactly that, and a charged or
open-shell structure is invalid for them rather than silently evaluated as neutral.

Security: fairchem checkpoints are pickles (``torch.load(weights_only=False)``); load only files you trust.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from energy.protocol import EnergyResult, Structures
from energy.validation import (
    DEFAULT_MIN_DISTANCE_ANGSTROM,
    Evaluated,
    StructureLimits,
    assemble_result,
    atom_slices,
    structure_problems,
)

__all__ = ["FairchemCheckpointError", "FairchemConfig", "FairchemEnergy"]

log = logging.getLogger(__name__)

# fairchem's accepted ranges (units.mlip_unit.api.inference.CHARGE_RANGE / SPIN_RANGE); multiplicity >= 1.
CHARGE_RANGE = (-100, 100)
MULTIPLICITY_RANGE = (1, 100)
OMOL_TASK = "omol"

# One structure: atomic numbers [n], positions [n, 3] (Å, CPU), total charge, spin multiplicity.
_Item = tuple[torch.Tensor, torch.Tensor, int, int]


class FairchemCheckpointError(ValueError):
    """A fairchem checkpoint is missing, unreadable, or not a usable energy-and-forces model."""


@dataclass(frozen=True, kw_only=True)
class FairchemConfig:
    """How to load and run a fairchem checkpoint.

    Attributes:
        checkpoint: path of an inference checkpoint (``uma-s-1p1.pt``, ``esen_sm_conserving_all.pt``, ...).
        device: ``"cpu"`` or ``"cuda"``.
        task_name: the UMA task (dataset head); ``"omol"`` for molecules (charge and spin aware).
        dtype: precision of the model and its inputs, ``torch.float32`` or ``torch.float64``.
        min_distance_angstrom: two atoms closer than this make a structure invalid (coincident atoms; see
            :mod:`energy.validation`, whose checks every structure passes first).
        max_atoms_per_batch: atoms per ``predict`` call; larger batches are split (bounds memory).
        seed: seeds fairchem's predictor at load and the random per-edge roll angles of the eSCN layers on every
            call (fairchem seeds and draws from the global generators; this adapter restores them).
    """

    checkpoint: Path
    device: str = "cpu"
    task_name: str = OMOL_TASK
    dtype: torch.dtype = torch.float32
    min_distance_angstrom: float = DEFAULT_MIN_DISTANCE_ANGSTROM
    max_atoms_per_batch: int = 20_000
    seed: int = 41

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        if self.max_atoms_per_batch < 1:
            raise ValueError(f"max_atoms_per_batch must be >= 1, got {self.max_atoms_per_batch}")


def _dtype(value: torch.dtype | str) -> torch.dtype:
    if isinstance(value, torch.dtype):
        return value
    named = {"float32": torch.float32, "float64": torch.float64}
    if value not in named:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {value!r}")
    return named[value]


@contextmanager
def _restored_global_rngs(cuda: bool) -> Iterator[None]:
    """fairchem's predictor seeds Python's, NumPy's and torch's global generators; put them back."""
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = range(torch.cuda.device_count()) if cuda or torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _inference_settings(dtype: torch.dtype) -> Any:
    from fairchem.core.units.mlip_unit.api.inference import InferenceSettings

    return InferenceSettings(
        tf32=False,
        activation_checkpointing=False,
        merge_mole=False,
        compile=False,
        external_graph_gen=False,
        base_precision_dtype=dtype,
        # The portable backend; the Triton one needs merged experts, the block-GEMM one is untested unmerged.
        execution_mode="general",
        # Stress is meaningless for molecules; only the checkpoint's own energy and forces tasks run.
        auto_add_default_untrained_tasks=False,
    )


def _load_predict_unit(config: FairchemConfig) -> Any:
    path = config.checkpoint
    if not path.exists():
        raise FairchemCheckpointError(f"fairchem checkpoint not found: {path}")
    if not path.is_file():
        raise FairchemCheckpointError(f"fairchem checkpoint is not a file: {path}")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but torch sees no CUDA device")
    from fairchem.core.units.mlip_unit import load_predict_unit

    try:
        with _restored_global_rngs(cuda=config.device == "cuda"):
            return load_predict_unit(
                str(path), inference_settings=_inference_settings(config.dtype), device=config.device, seed=config.seed
            )
    except Exception as exc:  # fairchem raises anything from UnpicklingError to KeyError and AssertionError
        raise FairchemCheckpointError(
            f"cannot load fairchem checkpoint {path}: {type(exc).__name__}: {exc} "
            "(expected an inference checkpoint as written by fairchem: an MLIPInferenceCheckpoint pickle)"
        ) from exc


class FairchemEnergy:
    """UMA / eSEN energies (eV) and forces (eV/Å) for a batch of molecules.

    Args:
        checkpoint: path of a local fairchem inference checkpoint (required; weights cannot be downloaded).
        device: ``"cpu"`` or ``"cuda"``.
        task_name: UMA task; ``"omol"`` (default) for molecules with charge and spin.
        dtype: ``"float32"`` (default, what the models were trained in) or ``"float64"``.
        min_distance_angstrom, max_atoms_per_batch, seed: see :class:`FairchemConfig`.

    Raises:
        FairchemCheckpointError: the checkpoint is missing, unreadable, lacks the task or has no
            energy or forces for it.

    Example::

        model = FairchemEnergy(checkpoint="uma-s-1p1.pt", device="cuda")
        result = model.evaluate(conformer_structures(mol))
    """

    def __init__(
        self,
        *,
        checkpoint: str | Path | None = None,
        device: str = "cpu",
        task_name: str = OMOL_TASK,
        dtype: torch.dtype | str = "float32",
        min_distance_angstrom: float = DEFAULT_MIN_DISTANCE_ANGSTROM,
        max_atoms_per_batch: int = 20_000,
        seed: int = 41,
    ) -> None:
        if checkpoint is None:
            raise ValueError(
                "the fairchem model needs checkpoint=PATH, a local UMA/eSEN inference checkpoint "
                "(pretrained weights cannot be downloaded here)"
            )
        self.config = FairchemConfig(
            checkpoint=Path(checkpoint).expanduser(),
            device=device,
            task_name=task_name,
            dtype=_dtype(dtype),
            min_distance_angstrom=min_distance_angstrom,
            max_atoms_per_batch=max_atoms_per_batch,
            seed=seed,
        )
        self._unit = _load_predict_unit(self.config)
        self._check_task()
        hydra_model = self._unit.model.module
        # The atom embeddings are indexed by atomic number: Z = 1 .. max_num_elements - 1.
        self.max_atomic_number = int(hydra_model.backbone.max_num_elements) - 1
        self.supports_single_atoms = bool(getattr(hydra_model, "supports_single_atoms", False))
        self.limits = StructureLimits(
            model=f"fairchem {self.config.checkpoint.name} ({task_name})",
            supported_elements=frozenset(range(1, self.max_atomic_number + 1)),
            min_distance_angstrom=min_distance_angstrom,
        )
        from fairchem.core.datasets.atomic_data import AtomicData, atomicdata_list_to_batch

        self._from_ase = AtomicData.from_ase
        self._collate = atomicdata_list_to_batch

    def _check_task(self) -> None:
        tasks = self._unit.dataset_to_tasks
        name, path = self.config.task_name, self.config.checkpoint
        if name not in tasks:
            raise FairchemCheckpointError(f"checkpoint {path} has no task {name!r}; it has {sorted(tasks)}")
        properties = {task.property for task in tasks[name]}
        missing = {"energy", "forces"} - properties
        if missing:
            raise FairchemCheckpointError(f"checkpoint {path} task {name!r} predicts no {', '.join(sorted(missing))}")

    @property
    def name(self) -> str:
        return "fairchem"

    @property
    def predict_unit(self) -> Any:
        """fairchem's ``MLIPPredictUnit`` (for ``FAIRChemCalculator`` and the like)."""
        return self._unit

    # --- input checks -------------------------------------------------------------------------------

    def _fairchem_problem(self, z: torch.Tensor, pos: torch.Tensor, charge: int, multiplicity: int) -> str | None:
        """What fairchem adds to the shared checks of :mod:`energy.validation`, or ``None``."""
        if z.numel() == 1 and not self.supports_single_atoms:
            return (
                "a single isolated atom: this model needs at least two atoms "
                "(fairchem's isolated-atom references are not part of a local checkpoint)"
            )
        if self.config.task_name == OMOL_TASK:
            if not CHARGE_RANGE[0] <= charge <= CHARGE_RANGE[1]:
                return f"total charge {charge} outside fairchem's range {CHARGE_RANGE}"
            if not MULTIPLICITY_RANGE[0] <= multiplicity <= MULTIPLICITY_RANGE[1]:
                return f"spin multiplicity {multiplicity} outside fairchem's range {MULTIPLICITY_RANGE}"
        elif charge != 0 or multiplicity != 1:
            return (
                f"task {self.config.task_name!r} has no charge or spin input (only 'omol' does); "
                f"got charge {charge}, multiplicity {multiplicity}"
            )
        return None

    # --- evaluation ---------------------------------------------------------------------------------

    def _atomic_data(self, z: torch.Tensor, pos: torch.Tensor, charge: int, multiplicity: int) -> Any:
        from ase import Atoms

        atoms = Atoms(numbers=z.numpy(), positions=pos.detach().to(torch.float64).numpy())
        omol = self.config.task_name == OMOL_TASK
        atoms.info["charge"] = charge if omol else 0
        atoms.info["spin"] = multiplicity if omol else 0
        # The arguments of FAIRChemCalculator (internal graph generation).
        return self._from_ase(
            atoms,
            task_name=self.config.task_name,
            r_edges=False,
            r_data_keys=["spin", "charge"],
            max_neigh=None,
            radius=6.0,
            target_dtype=self.config.dtype,
        )

    def _predict(self, items: Sequence[_Item]) -> tuple[torch.Tensor, torch.Tensor]:
        """One ``predict`` call: energies ``[g]`` (eV) and forces ``[n, 3]`` (eV/Å), detached, on the CPU."""
        # fairchem differentiates the energy with respect to positions: leave any caller's inference mode.
        with torch.inference_mode(False), torch.enable_grad(), self._private_rng():
            batch = self._collate([self._atomic_data(*item) for item in items])
            out = self._unit.predict(batch)
        return out["energy"].detach().reshape(-1).cpu(), out["forces"].detach().reshape(-1, 3).cpu()

    @contextmanager
    def _private_rng(self) -> Iterator[None]:
        """The eSCN layers draw a random roll angle per edge on every call (the output is invariant to it up to
        rounding); draw them from a generator seeded per call, so results repeat bit for bit and the caller's
        global generator is untouched."""
        cuda = self.config.device == "cuda"
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if cuda else []):
            if cuda:
                torch.cuda.manual_seed(self.config.seed)
            else:
                torch.random.default_generator.manual_seed(self.config.seed)
            yield

    def _chunks(self, order: list[int], sizes: list[int]) -> Iterator[list[int]]:
        chunk: list[int] = []
        atoms = 0
        for k in order:
            if chunk and atoms + sizes[k] > self.config.max_atoms_per_batch:
                yield chunk
                chunk, atoms = [], 0
            chunk.append(k)
            atoms += sizes[k]
        if chunk:
            yield chunk

    def evaluate(self, structures: Structures) -> EnergyResult:
        problems = structure_problems(structures, self.limits)
        slices = atom_slices(structures)
        positions = structures.positions.detach().cpu()
        numbers = structures.atomic_numbers.detach().cpu().long()
        charges = structures.total_charge.cpu().tolist()
        multiplicities = structures.multiplicity.cpu().tolist()
        items = [
            (numbers[rows], positions[rows], int(charges[k]), int(multiplicities[k])) for k, rows in enumerate(slices)
        ]
        outcomes: list[Evaluated | str | None] = [
            problem if problem is not None else self._fairchem_problem(*items[k]) for k, problem in enumerate(problems)
        ]
        sizes = [rows.stop - rows.start for rows in slices]
        for chunk in self._chunks([k for k, o in enumerate(outcomes) if o is None], sizes):
            self._evaluate_chunk(chunk, items, outcomes)
        done = [o for o in outcomes if o is not None]
        assert len(done) == len(outcomes), "every structure is evaluated or has a reason"
        return assemble_result(structures, done)

    def _evaluate_chunk(self, chunk: list[int], items: list[_Item], outcomes: list[Evaluated | str | None]) -> None:
        """Fill ``outcomes`` for ``chunk`` with one ``predict`` call; a failing batch is retried one by one."""
        try:
            energies, forces = self._predict([items[k] for k in chunk])
        except Exception as exc:
            if len(chunk) == 1:
                outcomes[chunk[0]] = f"fairchem evaluation failed: {type(exc).__name__}: {exc}"
                return
            log.warning("fairchem batch of %d structures failed (%s); evaluating one at a time", len(chunk), exc)
            for k in chunk:
                self._evaluate_chunk([k], items, outcomes)
            return
        start = 0
        for j, k in enumerate(chunk):
            n = items[k][0].numel()
            outcomes[k] = Evaluated(
                energy_ev=float(energies[j]),
                forces_ev_per_angstrom=forces[start : start + n].to(torch.float64).numpy(),
            )
            start += n
