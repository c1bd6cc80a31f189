"""The sampling engine the HTTP API and the sampling workers share: one loaded network, the energy models
(built on first use, each used by one thread at a time), and a bounded pool of threads that does every
sampling computation — so the event loop never runs one.

Example::

    >>> engine = SamplingEngine.load(ServiceSettings(checkpoint="tiny.pt", energy_model="mmff"))  # doctest: +SKIP
    >>> response = engine.sample("CCO", num_conformers=4, options=SamplingOptions())  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from energy.protocol import EnergyModel, EnergyResult, Structures
from energy.registry import build_energy_model
from energy.units import KCAL_PER_MOL_IN_EV
from inference.conformer_sampling import ConformerSampler, SampledConformers, SamplingRequest
from molecules.graph import MAX_ATOMS
from service.schemas import (
    MAX_JOB_CONFORMERS,
    MAX_JOB_SMILES,
    MAX_SMILES_LENGTH,
    MAX_SYNC_CONFORMERS,
    Checks,
    Conformer,
    ConformerResponse,
    ModelInfo,
    Provenance,
    SamplingOptions,
    ServiceInfo,
)
from service.settings import ServiceSettings
from service.validation import SUPPORTED_ELEMENTS
from training.checkpoint import file_sha256

__all__ = ["CheckpointMissing", "SamplingEngine", "build_response"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class CheckpointMissing(FileNotFoundError):
    """The configured checkpoint does not exist; the message says how to get one."""


class _SerializedEnergy:
    """An energy model evaluated by one thread at a time (calculator caches and worker pools are not
    thread-safe); requests for different models still run in parallel."""

    def __init__(self, model: EnergyModel) -> None:
        self.model = model
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.model.name

    def evaluate(self, structures: Structures) -> EnergyResult:
        with self._lock:
            return self.model.evaluate(structures)

    def close(self) -> None:
        close = getattr(self.model, "close", None)
        if callable(close):
            close()


class SamplingEngine:
    """Attributes:
    sampler: the network (energy-less; :meth:`sample` pairs it with the requested energy model).
    info: what ``/v1/model`` and every response's provenance report.
    """

    def __init__(self, sampler: ConformerSampler, settings: ServiceSettings, *, sha256: str) -> None:
        self.sampler = sampler
        self.settings = settings
        self.info = _model_info(sampler, sha256)
        self._energies: dict[str, _SerializedEnergy] = {}
        self._energies_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(
            settings.sampling_threads,
            thread_name_prefix="sampling",
            initializer=_set_torch_threads,
            initargs=(settings.torch_threads,),
        )
        self._backlog = 0
        self._backlog_lock = threading.Lock()

    @classmethod
    def load(cls, settings: ServiceSettings) -> SamplingEngine:
        path = Path(settings.checkpoint)
        if not path.is_file():
            raise CheckpointMissing(
                f"no conformer checkpoint at {path}. Train one with `adjoint-sampling train-conformers --out {path}` "
                "(or pass --checkpoint / set ADJOINT_SAMPLING_CHECKPOINT to an existing one)"
            )
        sampler = ConformerSampler(path, energy=None, device=settings.device)
        engine = cls(sampler, settings, sha256=file_sha256(path))
        log.info("loaded %s (sha256 %s…, %d integration steps)", path, engine.info.sha256[:12], engine.steps)
        return engine

    @property
    def steps(self) -> int:
        return int(self.sampler.config.eval_grid.num_steps)

    def energy(self, name: str) -> EnergyModel:
        """The named model (built on first use); names outside the allowed list are refused."""
        if name not in self.settings.energy_models:
            raise ValueError(f"energy model {name!r} is not offered; choose one of {list(self.settings.energy_models)}")
        with self._energies_lock:
            if name not in self._energies:
                log.info("building energy model %s", name)
                self._energies[name] = _SerializedEnergy(build_energy_model(name))
            return self._energies[name]

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` on a sampling thread (:attr:`backlog` counts it until it is done or cancelled)."""
        with self._backlog_lock:
            self._backlog += 1
        future = self._executor.submit(fn, *args)
        future.add_done_callback(self._done)
        return future

    def _done(self, _future: Future[Any]) -> None:
        with self._backlog_lock:
            self._backlog -= 1

    @property
    def backlog(self) -> int:
        """Computations submitted and not yet finished (running or waiting for a thread)."""
        return self._backlog

    def sample(self, smiles: str, num_conformers: int, options: SamplingOptions) -> ConformerResponse:
        """Blocking: sample, check, score, sort, prune; call it on a sampling thread."""
        name = options.energy_model or self.settings.energy_model
        sampler = self.sampler.with_energy(self.energy(name))
        request = SamplingRequest(
            smiles=smiles,
            num_conformers=num_conformers,
            seed=options.seed,
            relax=options.relax,
            repair=options.repair,
            prune_rms=options.prune_rms,
            energy_window=options.energy_window,
        )
        result = sampler.sample(request)
        return build_response(smiles, result, request=request, energy_model=name, info=self.info)

    def service_info(self) -> ServiceInfo:
        s = self.settings
        return ServiceInfo(
            model=self.info,
            energy_models=list(s.energy_models),
            default_energy_model=s.energy_model,
            supported_elements=list(SUPPORTED_ELEMENTS),
            max_atoms=MAX_ATOMS,
            limits={
                "max_smiles_length": MAX_SMILES_LENGTH,
                "max_sync_conformers": MAX_SYNC_CONFORMERS,
                "max_job_conformers": MAX_JOB_CONFORMERS,
                "max_job_smiles": MAX_JOB_SMILES,
                "sync_timeout_s": s.sync_timeout_s,
                "max_queue": s.max_queue,
                "result_ttl_s": s.result_ttl_s,
            },
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._energies_lock:
            for model in self._energies.values():
                model.close()
            self._energies.clear()


def _set_torch_threads(threads: int | None) -> None:
    """Intra-op threads of the sampling threads: oversubscribed cores make small molecules ~100x slower."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _model_info(sampler: ConformerSampler, sha256: str) -> ModelInfo:
    t = sampler.training
    return ModelInfo(
        checkpoint=sampler.checkpoint.name,
        sha256=sha256,
        kind="conformer-sampler",
        training_rounds=t.get("round"),
        training_energy_calls=t.get("energy_calls"),
        training_energy_model=sampler.config.energy_model,
        integration_steps=int(sampler.config.eval_grid.num_steps),
        versions={str(k): str(v) for k, v in (t.get("versions") or {}).items()},
    )


def build_response(
    smiles: str, result: SampledConformers, *, request: SamplingRequest, energy_model: str, info: ModelInfo
) -> ConformerResponse:
    """The JSON answer for one molecule: conformers lowest energy first, the checks, the provenance."""
    mol = result.mol
    energies = result.energies_ev
    e_min = min(energies) if energies else None
    conformers = []
    for rank, conf in enumerate(mol.GetConformers()):
        e = energies[rank] if energies else None
        rel = (e - e_min) / KCAL_PER_MOL_IN_EV if e is not None and e_min is not None else None
        conformers.append(
            Conformer(
                rank=rank,
                energy_ev=e,
                relative_energy_kcal_mol=rel,
                positions=np.round(conf.GetPositions(), 5).tolist(),
            )
        )
    passed = ["connectivity", "stereochemistry", f"{energy_model}: finite energy"]
    if request.relax:
        passed.append("connectivity and stereochemistry after relaxation")
    summary = result.summary()
    return ConformerResponse(
        smiles=smiles,
        num_atoms=mol.GetNumAtoms(),
        elements=[a.GetSymbol() for a in mol.GetAtoms()],
        bonds=[(b.GetBeginAtomIdx(), b.GetEndAtomIdx(), b.GetBondTypeAsDouble()) for b in mol.GetBonds()],
        conformers=conformers,
        checks=Checks(
            passed=passed,
            requested=request.num_conformers,
            returned=summary["returned"],
            rejected=summary["rejected"],
            reflected=summary["reflected"],
            pruned=summary["pruned"],
            outside_energy_window=summary["outside_energy_window"],
            repaired=summary["repaired"],
            stereo_repaired=summary["stereo_repaired"],
        ),
        provenance=Provenance(
            model=info,
            energy_model=energy_model,
            relaxed=request.relax,
            repaired=request.repair,
            seed=request.seed,
            timings_s=summary["seconds"],
        ),
    )
