"""Energy-model throughput on a batch of drug-sized conformers: worker processes and calculator reuse.

For every model in :data:`energy.registry.ENERGY_MODELS` that can be built, a batch of conformers
(default 64: 16 ETKDG conformers each of 4 drug-like SPICE *training* molecules, one per rotatable-bond
count 4–7, H C N O F S Cl only, 20–28 heavy atoms, neutral, closed shell, MMFF-typable) is evaluated by
these variants, in rotating order, ``--repeats`` times after one warm-up call each:

- ``in-process``: the model in this process, with ``--threads`` torch/OpenMP threads (default 1);
- ``1 worker`` / ``2 workers``: single-threaded worker processes (:mod:`energy.pool`). A model with a
  ``workers`` option (xtb) uses its own pool; others are wrapped here in a pool whose workers build the
  model from the registry and evaluate one task each (or tasks of ``--chunk`` structures), the batch's
  structures dealt round-robin so every worker gets the same mix of molecules;
- ``1 worker, fresh``: as ``1 worker`` but without calculator reuse (xtb: ``reuse_calculators=False``;
  mmff: ``cache_size=0``), where the model has such an option.

Timings are of steady state (workers started and caches warm: the same molecules come back round after
round in training); the warm-up call, which includes starting the workers, is reported separately.
A timed repeat calls the batch as many times as fill ``--min-repeat-seconds`` (MMFF's batch takes ~10 ms,
below the scheduler's noise) and reports the time per call.
The speedup of 2 workers over 1 is the ratio of the medians, and the median of the per-repeat ratios.
CPU time of this process and its workers is recorded per call ("cores used"), and before each repeat a
control measures how many cores two plain CPU-bound Python processes get at that moment, and how much
more fixed work the two do together than one alone: on a shared virtual machine that, not the pool,
bounds the speedup (CPU-time accounting alone cannot see a virtual CPU slowed by its busy host).

Results merge per model into ``benchmarks/results/energy_throughput.{md,json}``.

Reproduce: ``python -m benchmarks.energy_throughput --models xtb`` or
``adjoint-sampling bench energy --models xtb``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import logging
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.options import ENERGY_SMILES_FILE
from benchmarks.options import add_energy_throughput_arguments as add_arguments
from training.paths import RESULTS_DIR

# Heavy imports (torch, RDKit, the energy models) happen inside functions, so ``--help`` stays quick; the
# options live in :mod:`benchmarks.options`, from which ``adjoint-sampling bench energy`` builds its parser.

__all__ = ["BenchConfig", "add_arguments", "main", "pick_molecules", "run", "run_from_args"]

log = logging.getLogger(__name__)

DEFAULT_SMILES_FILE = ENERGY_SMILES_FILE
DEFAULT_OUT_DIR = RESULTS_DIR
ALLOWED_ELEMENTS = frozenset({"H", "C", "N", "O", "F", "S", "Cl"})


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """What the benchmark runs.

    Attributes:
        models: registry names to time.
        molecules: drug-like molecules (one per rotatable-bond count from 4 up).
        conformers_per_molecule: ETKDG conformers of each (``molecules × conformers_per_molecule`` in the batch).
        repeats: timed calls per variant after the warm-up call.
        chunk: structures per task when a model without its own workers is run in the generic pool;
            ``None``: one task per worker (``ceil(batch / workers)``), the least overhead for cheap models.
        min_repeat_seconds: each timed repeat calls ``evaluate`` on the batch as many times as fill this
            long (calibrated per variant on an untimed call) and reports the time per call, so a batch that
            takes milliseconds (MMFF) is not measured below the scheduler's noise.
        seed: ETKDG seed.
        threads: torch/OpenMP threads of this process, i.e. of the ``in-process`` variant (tblite shares
            torch's OpenMP runtime); workers always run single-threaded.
        smiles_file: SPICE training SMILES (TSV: rotatable bonds, SMILES, id).
        fairchem_checkpoint: a local fairchem checkpoint; ``None`` writes a tiny random-weight one.
        out_dir: where the ``.md``/``.json`` results go.
    """

    models: tuple[str, ...]
    molecules: int = 4
    conformers_per_molecule: int = 16
    repeats: int = 5
    chunk: int | None = None
    min_repeat_seconds: float = 0.5
    seed: int = 1
    threads: int = 1
    smiles_file: Path = DEFAULT_SMILES_FILE
    fairchem_checkpoint: Path | None = None
    out_dir: Path = DEFAULT_OUT_DIR

    def __post_init__(self) -> None:
        for name, value in (
            ("molecules", self.molecules),
            ("conformers_per_molecule", self.conformers_per_molecule),
            ("repeats", self.repeats),
            ("chunk", 1 if self.chunk is None else self.chunk),
            ("threads", self.threads),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.min_repeat_seconds < 0:
            raise ValueError(f"min_repeat_seconds must be >= 0, got {self.min_repeat_seconds}")


# --- the batch ----------------------------------------------------------------------------------------------------


def pick_molecules(smiles_file: Path, count: int) -> list[tuple[str, int]]:
    """The first SMILES in file order for each rotatable-bond count 4, 5, …: ``(smiles, rotatable bonds)``."""
    from rdkit import Chem
    from rdkit.Chem import rdForceFieldHelpers

    if not smiles_file.is_file():
        raise FileNotFoundError(f"SMILES file not found: {smiles_file} (pass --smiles-file)")
    wanted = list(range(4, 4 + count))
    picked: dict[int, str] = {}
    with smiles_file.open() as lines:
        next(lines)  # header
        for line in lines:
            rot_text, smiles, _ = line.rstrip("\n").split("\t")
            rot = int(rot_text)
            if rot not in wanted or rot in picked:
                continue
            mol = Chem.MolFromSmiles(smiles)
            if mol is None or not 20 <= mol.GetNumHeavyAtoms() <= 28:
                continue
            if any(a.GetFormalCharge() or a.GetNumRadicalElectrons() for a in mol.GetAtoms()):
                continue
            if not {a.GetSymbol() for a in mol.GetAtoms()} <= ALLOWED_ELEMENTS:
                continue
            if not rdForceFieldHelpers.MMFFHasAllMoleculeParams(Chem.AddHs(mol)):
                continue
            picked[rot] = smiles
            if len(picked) == count:
                break
    if len(picked) < count:
        raise ValueError(f"only {len(picked)} of {count} suitable molecules in {smiles_file}")
    return [(picked[rot], rot) for rot in wanted]


def conformer_batch(molecules: list[tuple[str, int]], per_molecule: int, seed: int) -> tuple[Any, list[dict[str, Any]]]:
    """ETKDG conformers of each molecule, concatenated into one :class:`~energy.protocol.Structures`."""
    from rdkit import Chem
    from rdkit.Chem import rdDistGeom

    from energy.protocol import Structures
    from molecules.structures import conformer_structures

    parts, described = [], []
    for smiles, rot in molecules:
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        params = rdDistGeom.ETKDGv3()
        params.randomSeed = seed  # type: ignore[assignment]  # never 0: RDKit 2026.9 repeats the conformer
        ids = list(rdDistGeom.EmbedMultipleConfs(mol, numConfs=per_molecule, params=params))
        if len(ids) != per_molecule:
            raise RuntimeError(f"ETKDG embedded {len(ids)} of {per_molecule} conformers of {smiles}")
        parts.append(conformer_structures(mol, ids))
        described.append({"smiles": smiles, "rotatable_bonds": rot, "atoms": mol.GetNumAtoms(), "conformers": len(ids)})
    batch = Structures.concat(parts)
    return batch, described


# --- models without their own workers, in the generic pool -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Chunk:
    """Some structures as plain arrays (no tensors cross the process boundary)."""

    positions: Any
    num_atoms: Any
    atomic_numbers: Any
    total_charge: Any
    multiplicity: Any
    connection_tables: tuple[str | None, ...] | None


@dataclass(frozen=True, slots=True)
class _ChunkResult:
    energies: Any
    forces: Any
    valid: Any
    reasons: tuple[str | None, ...]
    seconds: float  # wall time of the evaluation inside the worker


class RegistryEvaluator:
    """Worker side of :class:`PooledModel`: the named model, built when a worker loads it, evaluates chunks."""

    def __init__(self, name: str, options: dict[str, Any]) -> None:
        self.name, self.options = name, options
        self._model: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        from energy.registry import build_energy_model

        self.name, self.options = state["name"], state["options"]
        # built while the worker starts: a ready worker is a warm one, and a model that cannot be
        # built is a WorkerStartupError instead of a failure per chunk
        self._model = build_energy_model(self.name, **self.options)

    def __call__(self, chunk: _Chunk) -> _ChunkResult:
        import torch

        from energy.protocol import Structures

        structures = Structures(
            positions=torch.from_numpy(chunk.positions),
            num_atoms=torch.from_numpy(chunk.num_atoms),
            atomic_numbers=torch.from_numpy(chunk.atomic_numbers),
            total_charge=torch.from_numpy(chunk.total_charge),
            multiplicity=torch.from_numpy(chunk.multiplicity),
            connection_tables=chunk.connection_tables,
        )
        start = time.perf_counter()
        r = self._model.evaluate(structures)
        seconds = time.perf_counter() - start
        return _ChunkResult(r.energies.numpy(), r.forces.numpy(), r.valid.numpy(), r.reasons, seconds)


class PooledModel:
    """Any registry model in :class:`~energy.pool.ProcessPool` workers, ``chunk`` structures per task
    (``None``: one task per worker)."""

    def __init__(self, name: str, options: dict[str, Any], workers: int, chunk: int | None) -> None:
        from energy.pool import PoolConfig, ProcessPool

        self.name, self.workers, self.chunk = name, workers, chunk
        # sum over calls of the slowest task's evaluation time inside its worker: with one task per worker,
        # a call's wall time minus this is what the pool itself costs (sending, waking, collecting, the
        # parent's share); with smaller tasks a worker runs several in a row and the split means nothing
        self.slowest_task_seconds: float | None = 0.0 if chunk is None else None
        self._pool: Any = ProcessPool(RegistryEvaluator(name, options), PoolConfig(workers=workers, timeout_s=600.0))

    def evaluate(self, structures: Any) -> Any:
        """Structures are dealt round-robin to the tasks (task ``k`` holds structures ``k, k + T, ...``), so
        a batch of many conformers of a few molecules gives every worker the same mix of molecules.
        Results are scattered back with array indexing: the parent's serial share stays small."""
        import numpy as np
        import torch

        from energy.pool import TaskFailure
        from energy.protocol import EnergyResult

        g = structures.num_structures
        counts = structures.num_atoms.cpu().numpy()
        ends = np.cumsum(counts)
        size = -(-g // self.workers) if self.chunk is None else self.chunk
        tasks = -(-g // size)
        members = [np.arange(k, g, tasks) for k in range(tasks)]
        rows = [np.concatenate([np.arange(ends[i] - counts[i], ends[i]) for i in m]) for m in members]
        positions = structures.positions.detach().cpu().numpy()
        numbers = structures.atomic_numbers.cpu().numpy()
        charge, mult = structures.total_charge.cpu().numpy(), structures.multiplicity.cpu().numpy()
        tables = structures.connection_tables
        chunks = [
            _Chunk(
                positions=positions[r],
                num_atoms=counts[m],
                atomic_numbers=numbers[r],
                total_charge=charge[m],
                multiplicity=mult[m],
                connection_tables=None if tables is None else tuple(tables[i] for i in m),
            )
            for m, r in zip(members, rows, strict=True)
        ]
        energies = np.full(g, np.nan)
        forces = np.zeros((positions.shape[0], positions.shape[1]))
        reasons: list[str | None] = [None] * g
        answers = self._pool.map(chunks)
        if self.slowest_task_seconds is not None:
            done = [a.seconds for a in answers if not isinstance(a, TaskFailure)]
            self.slowest_task_seconds += max(done, default=0.0)
        for m, r, answer in zip(members, rows, answers, strict=True):
            if isinstance(answer, TaskFailure):
                for i in m:
                    reasons[i] = answer.reason
                continue
            energies[m] = answer.energies
            forces[r] = answer.forces
            for i, ok, why in zip(m, answer.valid, answer.reasons, strict=True):
                if not ok:
                    reasons[i] = str(why)
        valid = np.array([why is None for why in reasons])  # invalid rows are already nan / zero
        like = structures.positions
        return EnergyResult(
            energies=torch.as_tensor(energies, dtype=like.dtype, device=like.device),
            forces=torch.as_tensor(forces, dtype=like.dtype, device=like.device),
            valid=torch.as_tensor(valid, device=like.device),
            reasons=tuple(reasons),
        )

    @property
    def worker_pids(self) -> list[int]:
        return list(self._pool.worker_pids)

    def close(self) -> None:
        self._pool.close()


# --- variants and timing -----------------------------------------------------------------------------------------


def _model_class(name: str) -> Any:
    from energy.registry import ENERGY_MODELS

    module_name, class_name = ENERGY_MODELS[name][0].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def _fresh_options(cls: Any) -> dict[str, Any] | None:
    """Options that switch calculator reuse off, if the model has any."""
    parameters = inspect.signature(cls).parameters
    if "reuse_calculators" in parameters:
        return {"reuse_calculators": False}
    if "cache_size" in parameters:
        return {"cache_size": 0}
    return None


def _variants(name: str, base: dict[str, Any], chunk: int | None) -> tuple[dict[str, Any], list[str]]:
    """Label -> a built model (each with ``evaluate``), and notes on what could not be compared."""
    from energy.registry import build_energy_model

    cls = _model_class(name)
    own_workers = "workers" in inspect.signature(cls).parameters
    fresh = _fresh_options(cls)
    notes = []

    def make(workers: int, extra: dict[str, Any]) -> Any:
        options = {**base, **extra}
        if own_workers:
            return build_energy_model(name, workers=workers, **options)
        if workers == 0:
            return build_energy_model(name, **options)
        return PooledModel(name, options, workers, chunk)

    if not own_workers:
        per_task = "one task per worker" if chunk is None else f"{chunk} structures/task"
        notes.append(f"{cls.__name__} has no worker option: workers run it from the registry, {per_task}")
    variants = {"in-process": make(0, {}), "1 worker": make(1, {}), "2 workers": make(2, {})}
    if fresh is None:
        notes.append(f"{cls.__name__} has no calculator-reuse option: reuse vs fresh not applicable")
    else:
        variants["1 worker, fresh"] = make(1, fresh)
        notes.append(f"fresh = {fresh}")
    return variants, notes


def _worker_cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (Linux ``/proc``; 0 where unreadable)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime: fields 14 and 15 of stat
    return total


_BURN = """
import time
c, w = time.process_time(), time.perf_counter()
x = 0
for i in range({n}):
    x += i * i
print(time.process_time() - c, time.perf_counter() - w)
"""


def available_cores(processes: int = 2, iterations: int = 3_000_000) -> tuple[float, float]:
    """Control, measured right now with plain CPU-bound Python processes (no imports, no pool):

    - cores: CPU seconds per wall second that ``processes`` of them get when started together (2.0 for
      2 processes on an idle 2-core machine);
    - parallel speedup: how much more *work* ``processes`` of them do together than one alone in the same
      wall time (fixed loop, timed inside each process). CPU-time accounting cannot see a virtual CPU that
      runs slower because its host is busy; this can: it is the best speedup any 2-worker pool could show.
    """
    import subprocess

    def burn(count: int) -> list[tuple[float, float]]:
        running = [
            subprocess.Popen([sys.executable, "-c", _BURN.format(n=iterations)], stdout=subprocess.PIPE, text=True)
            for _ in range(count)
        ]
        return [(float(a), float(b)) for a, b in (p.communicate()[0].split() for p in running)]

    alone = burn(1)[0][1]
    start = time.perf_counter()
    together = burn(processes)
    wall = time.perf_counter() - start
    cores = sum(cpu for cpu, _ in together) / wall
    return cores, processes * alone / max(w for _, w in together)


def _timed(model: Any, batch: Any, calls: int = 1) -> tuple[float, float, float | None, Any]:
    """Wall seconds and CPU seconds (this process and the model's workers) per call, over ``calls``
    consecutive calls; the slowest task's evaluation time inside its worker per call (generic pool only,
    else ``None``); and the last call's result."""
    pids = list(getattr(model, "worker_pids", []))
    inside_start = getattr(model, "slowest_task_seconds", None)
    cpu_start, workers_start = time.process_time(), _worker_cpu_seconds(pids)
    start = time.perf_counter()
    for _ in range(calls):
        result = model.evaluate(batch)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start + _worker_cpu_seconds(pids) - workers_start
    inside_end = getattr(model, "slowest_task_seconds", None)
    inside = None if inside_start is None or inside_end is None else (inside_end - inside_start) / calls
    return wall / calls, cpu / calls, inside, result


def bench_model(name: str, base: dict[str, Any], batch: Any, config: BenchConfig) -> dict[str, Any]:
    """Warm-up and ``repeats`` rotating-order timed calls of every variant of one model."""
    import torch

    variants, notes = _variants(name, base, config.chunk)
    labels = list(variants)
    out: dict[str, Any] = {"notes": notes, "in_process_threads": torch.get_num_threads(), "variants": {}}
    energies: dict[str, Any] = {}
    try:
        for label in labels:
            seconds, _, _, result = _timed(variants[label], batch)
            out["variants"][label] = {
                "first_call_s": seconds,
                "times_s": [],
                "cpu_s": [],
                "slowest_task_s": [],
                "valid": int(result.valid.sum()),
            }
            energies[label] = result.energies
            steady, _, _, _ = _timed(variants[label], batch)  # untimed: how many calls fill a repeat
            calls = max(1, math.ceil(config.min_repeat_seconds / max(steady, 1e-9)))
            out["variants"][label]["calls_per_repeat"] = calls
            log.info(
                "%s %s: warm-up %.2f s, %d valid, %d call(s) per repeat",
                name,
                label,
                seconds,
                int(result.valid.sum()),
                calls,
            )
        loads, control, speedups = [], [], []
        for r in range(config.repeats):
            loads.append(os.getloadavg()[0])
            cores, speedup = available_cores()
            control.append(cores)
            speedups.append(speedup)
            for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
                calls = out["variants"][label]["calls_per_repeat"]
                seconds, cpu, inside, _ = _timed(variants[label], batch, calls)
                out["variants"][label]["times_s"].append(seconds)
                out["variants"][label]["cpu_s"].append(cpu)
                if inside is not None:
                    out["variants"][label]["slowest_task_s"].append(inside)
            log.info("%s repeat %d: %s", name, r, {k: round(v["times_s"][-1], 2) for k, v in out["variants"].items()})
    finally:
        for model in variants.values():
            if hasattr(model, "close"):
                model.close()
    g = batch.num_structures
    for label, v in out["variants"].items():
        v["median_s"] = statistics.median(v["times_s"])
        v["cores_used"] = statistics.median(c / t for c, t in zip(v["cpu_s"], v["times_s"], strict=True))
        v["conformers_per_cpu_s"] = g / statistics.median(v["cpu_s"]) if statistics.median(v["cpu_s"]) > 0 else None
        v["conformers_per_s"] = g / v["median_s"]
        if v.get("slowest_task_s"):
            v["median_slowest_task_s"] = statistics.median(v["slowest_task_s"])
        both = ~torch.isnan(energies[label]) & ~torch.isnan(energies["1 worker"])
        v["max_abs_energy_difference_ev_vs_1_worker"] = (
            float((energies[label][both] - energies["1 worker"][both]).abs().max()) if both.any() else None
        )
    one, two = out["variants"]["1 worker"], out["variants"]["2 workers"]
    out["speedup_2_vs_1_workers"] = one["median_s"] / two["median_s"]
    out["speedup_2_vs_1_workers_paired_median"] = statistics.median(
        a / b for a, b in zip(one["times_s"], two["times_s"], strict=True)
    )
    if "1 worker, fresh" in out["variants"]:
        out["speedup_reuse_vs_fresh"] = out["variants"]["1 worker, fresh"]["median_s"] / one["median_s"]
    out["load_average_1min"] = loads
    out["control_cores_for_2_plain_processes"] = control
    out["control_speedup_for_2_plain_processes"] = speedups
    return out


def _model_options(name: str, config: BenchConfig, scratch: Path) -> dict[str, Any]:
    if name != "fairchem":
        return {}
    if config.fairchem_checkpoint is not None:
        return {"checkpoint": str(config.fairchem_checkpoint)}
    from tests.fairchem_tiny import write_random_checkpoint  # the random-weight model the tests use

    return {"checkpoint": str(write_random_checkpoint(scratch / "random-tiny-uma.pt"))}


# --- the run and its report --------------------------------------------------------------------------------------


def run(config: BenchConfig, command: str) -> dict[str, Any]:
    """Time every model in ``config.models``, merge into the results files, return the merged results."""
    import torch

    torch.set_num_threads(config.threads)
    molecules = pick_molecules(config.smiles_file, config.molecules)
    batch, described = conformer_batch(molecules, config.conformers_per_molecule, config.seed)
    machine = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": list(os.getloadavg()),
    }
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in config.models:
            try:
                options = _model_options(name, config, Path(scratch))
                _model_class(name)
            except Exception as exc:  # not landed yet, or its optional pieces are missing
                log.warning("skipping %s: %s", name, exc)
                results[name] = {"skipped": f"{type(exc).__name__}: {exc}"}
                continue
            entry = bench_model(name, options, batch, config)
            if name == "fairchem":
                entry["notes"].append(
                    "random-weight tiny UMA checkpoint (tests/fairchem_tiny.py)"
                    if config.fairchem_checkpoint is None
                    else f"checkpoint {config.fairchem_checkpoint.name}"
                )
            results[name] = entry
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    for entry in results.values():
        entry.update(command=command, date=stamp, machine=machine, batch=described, conformers=batch.num_structures)
    return _write(config.out_dir, results)


def _write(out_dir: Path, results: dict[str, Any]) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "energy_throughput.json"
    merged: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    merged.update(results)
    path.write_text(json.dumps(merged, indent=2) + "\n")
    (out_dir / "energy_throughput.md").write_text(markdown(merged))
    return merged


def _verdict(entry: dict[str, Any]) -> str:
    """Whether 2 workers met the 1.8× target, and if not, what the CPU accounting says about why."""
    one, two = entry["variants"]["1 worker"], entry["variants"]["2 workers"]
    speedup = min(entry["speedup_2_vs_1_workers"], entry["speedup_2_vs_1_workers_paired_median"])
    if speedup >= 1.8:
        return "Target met."
    cores = two.get("cores_used")
    if cores is None:
        return "Target not met."
    work = (
        f" Per CPU-second, 2 workers evaluated {two['conformers_per_cpu_s'] / one['conformers_per_cpu_s']:.2f}× "
        "as many conformers as 1"
        if one.get("conformers_per_cpu_s") and two.get("conformers_per_cpu_s")
        else ""
    )
    control = entry.get("control_cores_for_2_plain_processes")
    if control:
        work += (
            f". Control: two plain CPU-bound Python processes started together got {statistics.median(control):.2f}"
            " cores (median over repeats)"
        )
    speedups = entry.get("control_speedup_for_2_plain_processes")
    if speedups:
        control_speedup = statistics.median(speedups)
        work += (
            f" and did {control_speedup:.2f}× the work of one alone: the pool's {speedup:.2f}× is "
            f"{speedup / control_speedup:.0%} of what perfectly parallel work got at the same time"
        )
    if cores < 1.8:
        load = statistics.median(entry["load_average_1min"])
        return (
            f"Target not met: the 2 workers got {cores:.2f} cores on average (1 worker: {one['cores_used']:.2f}), "
            f"1-min load average {load:.1f} on {entry['machine']['cpus']} CPUs: the machine was shared.{work}."
        )
    return f"Target not met although the workers got {cores:.2f} cores: overhead or uneven tasks.{work}."


def _inside_workers(entry: dict[str, Any]) -> str | None:
    """Split the 2-vs-1 speedup into the workers' own evaluation time and the pool's overhead (generic pool)."""
    one, two = entry["variants"]["1 worker"], entry["variants"]["2 workers"]
    if "median_slowest_task_s" not in one or "median_slowest_task_s" not in two:
        return None
    t1, t2 = one["median_slowest_task_s"], two["median_slowest_task_s"]
    return (
        f"Inside the workers: the whole batch took {_duration(t1)} to evaluate in 1 worker, the slower half "
        f"{_duration(t2)} in 2 concurrent workers, so each of 2 concurrent workers ran at {t1 / (2 * t2):.0%} of "
        f"one worker's rate; with no pool overhead at all, 2 vs 1 would have been {t1 / t2:.2f}×. Pool overhead "
        f"per call (median call minus the slowest task): {_duration(one['median_s'] - t1)} with 1 worker, "
        f"{_duration(two['median_s'] - t2)} with 2."
    )


def _duration(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.1f} ms"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Energy-model throughput",
        "",
        "Steady-state throughput on one batch of drug-sized conformers (workers started, calculator caches warm);",
        "the warm-up call includes starting the workers. Workers are single-threaded processes; `in-process` uses",
        "this process's torch/OpenMP threads. Median of the timed repeats, variants in rotating order; a repeat",
        "times `calls` consecutive calls of the batch (as many as fill `--min-repeat-seconds`) and reports per call.",
        "Cores used: CPU seconds of this process and its workers per wall second (median over repeats): what",
        "the machine actually gave the variant; 2 workers can only be 2× faster if they get 2 cores. The control",
        "measures, before each repeat, the cores two plain CPU-bound Python processes get when started together.",
        "Produced by `benchmarks/energy_throughput.py`; each model's reproduce command is listed with it.",
        "",
    ]
    for name, entry in results.items():
        lines.append(f"## {name}")
        lines.append("")
        if "skipped" in entry:
            lines += [f"Skipped: {entry['skipped']}", ""]
            continue
        batch = ", ".join(f"`{m['smiles']}` ({m['atoms']} atoms)" for m in entry["batch"])
        lines += [
            f"Reproduce: `{entry['command']}`  ",
            f"Run {entry['date']} on {entry['machine']['cpus']} CPUs; 1-min load average during the repeats: "
            f"{', '.join(f'{x:.1f}' for x in entry['load_average_1min'])}.  ",
            f"Batch: {entry['conformers']} conformers of {batch}.",
            "",
            "| variant | conformers/s | median per call | repeats, per call | calls | cores used | conformers/CPU-s "
            "| warm-up s | valid | max ΔE vs 1 worker, eV |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for label, v in entry["variants"].items():
            threads = entry["in_process_threads"]
            shown = label if label != "in-process" else f"in-process ({threads} thread{'s' * (threads != 1)})"
            diff = v["max_abs_energy_difference_ev_vs_1_worker"]
            lines.append(
                f"| {shown} | {v['conformers_per_s']:.1f} | {_duration(v['median_s'])} | "
                f"{' '.join(_duration(t) for t in v['times_s'])} | {v.get('calls_per_repeat', 1)} | "
                f"{_number(v.get('cores_used'))} | "
                f"{_number(v.get('conformers_per_cpu_s'))} | "
                f"{v['first_call_s']:.2f} | "
                f"{v['valid']} | "
                f"{'–' if diff is None else f'{diff:.1e}'} |"
            )
        lines += [
            "",
            f"2 workers vs 1: **{entry['speedup_2_vs_1_workers']:.2f}×** (ratio of medians), "
            f"{entry['speedup_2_vs_1_workers_paired_median']:.2f}× (median of per-repeat ratios); target ≥ 1.8×.",
            _verdict(entry),
        ]
        inside = _inside_workers(entry)
        if inside:
            lines.append(inside)
        speedups = entry.get("control_speedup_for_2_plain_processes")
        if speedups:
            lines.append(
                "Control, before each repeat: two plain CPU-bound Python processes together did "
                f"{' '.join(f'{x:.2f}' for x in speedups)}× the work of one alone (median "
                f"{statistics.median(speedups):.2f}×): the most any 2-worker pool could gain at that moment."
            )
        if "speedup_reuse_vs_fresh" in entry:
            lines.append(f"Calculator reuse vs fresh (1 worker): **{entry['speedup_reuse_vs_fresh']:.2f}×**.")
        lines += [f"- {note}" for note in entry["notes"]]
        lines.append("")
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------------------------------------


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """Raises ValueError on an unknown model name."""
    from energy.registry import ENERGY_MODELS

    models = tuple(ENERGY_MODELS) if args.models is None else tuple(args.models)
    unknown = sorted(set(models) - set(ENERGY_MODELS))
    if unknown:
        raise ValueError(f"unknown energy model(s) {unknown}; choose from {sorted(ENERGY_MODELS)}")
    return BenchConfig(
        models=models,
        molecules=args.molecules,
        conformers_per_molecule=args.conformers_per_molecule,
        repeats=args.repeats,
        chunk=args.chunk,
        min_repeat_seconds=args.min_repeat_seconds,
        seed=args.seed,
        threads=args.threads,
        smiles_file=args.smiles_file,
        fairchem_checkpoint=args.fairchem_checkpoint,
        out_dir=args.out_dir,
    )


def summary_lines(results: dict[str, Any], models: tuple[str, ...]) -> list[str]:
    lines = []
    for name in models:
        entry = results[name]
        if "skipped" in entry:
            lines.append(f"{name}: skipped ({entry['skipped']})")
            continue
        rates = ", ".join(f"{k} {v['conformers_per_s']:.1f}/s" for k, v in entry["variants"].items())
        reuse = entry.get("speedup_reuse_vs_fresh")
        lines.append(
            f"{name}: {rates}; 2 vs 1 workers {entry['speedup_2_vs_1_workers']:.2f}x "
            f"(paired {entry['speedup_2_vs_1_workers_paired_median']:.2f}x)"
            + (f"; reuse vs fresh {reuse:.2f}x" if reuse is not None else "")
        )
    return lines


def run_from_args(args: argparse.Namespace, command: str) -> list[str]:
    """Run with parsed :func:`add_arguments` options; the summary lines (results, files, reproduce command)."""
    config = config_from_args(args)
    results = run(config, command)
    return [
        *summary_lines(results, config.models),
        f"wrote {config.out_dir / 'energy_throughput.md'} and .json",
        f"reproduce: {command}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.energy_throughput", description=__doc__.split("\n")[0])
    add_arguments(parser)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = " ".join(["python -m benchmarks.energy_throughput", *(shlex.quote(a) for a in argv)])
    for line in run_from_args(args, command):
        log.info("%s", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
