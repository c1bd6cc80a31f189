"""The sampling engine the HTTP API and the sampling workers share: one loaded model behind the Python API's
:class:`~inference.api.ConformerGenerator` (so the service answers exactly what ``generate_conformers`` and
the CLI give for the same request), the energy models (built on first use, each used by one thread at a
time), and a bounded pool of threads that does every sampling computation — so the event loop never runs one.

Example::

    >>> engine = SamplingEngine.load(ServiceSettings(checkpoint="tiny.pt", energy_model="mmff"))  # doctest: +SKIP
    >>> (response,) = engine.sample("CCO", num_conformers=4, options=SamplingOptions())  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from energy.protocol import EnergyModel, EnergyResult, Structures
from energy.registry import build_energy_model
from inference.api import ConformerGenerator, Ensemble
from inference.model import ModelProvenance
from inference.options import PostProcessing
from molecules.ensemble import boltzmann_weights, relative_energies_kcal_mol
from molecules.graph import MAX_ATOMS
from molecules.tags import TAG_PIPELINE
from service.schemas import (
    MAX_JOB_CONFORMERS,
    MAX_JOB_SMILES,
    MAX_SMILES_LENGTH,
    MAX_SYNC_CONFORMERS,
    Checks,
    Conformer,
    ConformerResponse,
    ModelInfo,
    PostProcessingInfo,
    Provenance,
    SamplingOptions,
    ServiceInfo,
)
from service.settings import ServiceSettings
from service.validation import SUPPORTED_ELEMENTS
from training.checkpoint import file_sha256

__all__ = [
    "CheckpointMissing",
    "LoadedModel",
    "ModelLoadError",
    "SamplingEngine",
    "build_response",
    "post_processing",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


class CheckpointMissing(FileNotFoundError):
    """The configured checkpoint does not exist; the message says how to get one."""


class ModelLoadError(RuntimeError):
    """A checkpoint could not replace the model being served (missing, unreadable, wrong kind, wrong SHA-256);
    the model being served stays."""


@dataclass(frozen=True)
class LoadedModel:
    """One loaded model and what answers report of it; never changed, only replaced as a whole.

    Attributes:
        generator: the Python API's generator holding the model (its energy models are the engine's).
        info: what ``/v1/model`` and the provenance of every answer it produced report.
    """

    generator: ConformerGenerator
    info: ModelInfo


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
    """The loaded model, the energy models and the sampling threads.

    The model is an immutable :class:`LoadedModel` swapped whole under a lock (:meth:`swap`): a request takes
    the current one once when it starts and finishes on it, whatever is swapped in meanwhile; later requests
    get the new one.

    Attributes:
        current: the model now answering new requests.
        info: its description (``current.info``).
    """

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self._energies: dict[str, _SerializedEnergy] = {}
        self._energies_lock = threading.Lock()
        self._swap_lock = threading.Lock()  # guards the reference only: taking the current model never waits on a load
        self._loading = threading.Lock()  # one swap at a time
        self._store: Path | None = None  # private copies of swapped-in checkpoints
        self._current = self._load(Path(settings.checkpoint))
        self._executor = ThreadPoolExecutor(
            settings.sampling_threads,
            thread_name_prefix="sampling",
            initializer=_set_torch_threads,
            initargs=(settings.torch_threads,),
        )
        self._backlog = 0
        self._backlog_lock = threading.Lock()

    def _load(self, path: Path) -> LoadedModel:
        generator = ConformerGenerator(checkpoint=path, device=self.settings.device, energy_models=self._build_energy)
        sampler = generator.sampler()
        return LoadedModel(
            generator=generator, info=model_info(sampler.provenance, default_select=sampler.default_select)
        )

    @property
    def current(self) -> LoadedModel:
        with self._swap_lock:
            return self._current

    @property
    def info(self) -> ModelInfo:
        return self.current.info

    @property
    def generator(self) -> ConformerGenerator:
        return self.current.generator

    def swap(self, checkpoint: Path, *, expected_sha256: str | None = None) -> ModelInfo:
        """Serve the model in ``checkpoint`` to every request that starts from now on.

        The file is first copied to a private folder (a trainer may overwrite the published file any time) and
        the copy's SHA-256 checked against ``expected_sha256``; then the model is loaded, and only then swapped
        in. Running requests finish on the model they started with.

        Raises:
            ModelLoadError: missing, unreadable or corrupt file, a kind no conformer model reads, a SHA-256
                other than ``expected_sha256``; the current model keeps serving.
        """
        with self._loading:
            return self._swap(Path(checkpoint), expected_sha256)

    def _swap(self, checkpoint: Path, expected_sha256: str | None) -> ModelInfo:
        folder = self._new_folder()
        try:
            copy = folder / checkpoint.name  # the name answers show stays the published file's
            shutil.copyfile(checkpoint, copy)
            sha = file_sha256(copy)
            if expected_sha256 is not None and sha != expected_sha256:
                raise ValueError(f"its SHA-256 is {sha[:12]}…, the announcement says {expected_sha256[:12]}…")
            loaded = self._load(copy)
        except Exception as exc:  # whatever the file holds, the model being served must stay
            shutil.rmtree(folder, ignore_errors=True)
            reason = f"no such file {checkpoint}" if isinstance(exc, FileNotFoundError) else str(exc)
            raise ModelLoadError(f"cannot serve {checkpoint}: {reason}") from exc
        with self._swap_lock:
            self._current = loaded
        self._forget_copies(keep=folder)
        log.info(
            "now serving %s (round %s, sha256 %s…)", checkpoint, loaded.info.training_rounds, loaded.info.sha256[:12]
        )
        return loaded.info

    def _new_folder(self) -> Path:
        if self._store is None:
            self._store = Path(tempfile.mkdtemp(prefix="adjoint-sampling-models-"))
        return Path(tempfile.mkdtemp(dir=self._store))

    def _forget_copies(self, *, keep: Path | None = None) -> None:
        """Delete the copies of models no longer served (running requests hold their model in memory)."""
        if self._store is None:
            return
        for folder in self._store.iterdir():
            if folder != keep:
                shutil.rmtree(folder, ignore_errors=True)

    @classmethod
    def load(cls, settings: ServiceSettings) -> SamplingEngine:
        path = Path(settings.checkpoint)
        if not path.is_file():
            raise CheckpointMissing(
                f"no conformer checkpoint at {path}. Train one with `adjoint-sampling train-conformers --out {path}` "
                "(or pass --checkpoint / set ADJOINT_SAMPLING_CHECKPOINT to an existing one)"
            )
        engine = cls(settings)
        log.info("loaded %s (sha256 %s…, %s integration steps)", path, engine.info.sha256[:12], engine.steps)
        return engine

    @property
    def steps(self) -> int | None:
        return self.info.integration_steps

    def energy(self, name: str) -> EnergyModel:
        """The named model (built on first use); names outside the allowed list are refused."""
        if name not in self.settings.energy_models:
            raise ValueError(f"energy model {name!r} is not offered; choose one of {list(self.settings.energy_models)}")
        return self._build_energy(name)

    def _build_energy(self, name: str) -> EnergyModel:
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

    def sample(self, smiles: str, num_conformers: int, options: SamplingOptions) -> list[ConformerResponse]:
        """Blocking (call it on a sampling thread): the Python API's pipeline, one answer per molecule sampled
        (the SMILES itself, or each stereoisomer with ``stereo: enumerate``)."""
        name = options.energy_model or self.settings.energy_model
        self.energy(name)  # refuses a model the server does not offer
        current = self.current  # this request finishes on this model, whatever is swapped in meanwhile
        ensembles = current.generator.generate(
            smiles,
            num_conformers=num_conformers,
            energy_model=name,
            options=post_processing(options),
            seed=options.seed,
        )
        return [build_response(e, info=current.info) for e in ensembles]

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
        self.current.generator.close()
        with self._energies_lock:
            for model in self._energies.values():
                model.close()
            self._energies.clear()
        if self._store is not None:
            shutil.rmtree(self._store, ignore_errors=True)


def _set_torch_threads(threads: int | None) -> None:
    """Intra-op threads of the sampling threads: oversubscribed cores make small molecules ~100x slower."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def post_processing(options: SamplingOptions) -> PostProcessing:
    """A request's post-processing settings (``prune_rms``, the former name of ``dedup_rmsd``, wins when given)."""
    return PostProcessing(
        repair=options.repair,
        relax=options.relax,
        dedup_rmsd=options.prune_rms if options.prune_rms is not None else options.dedup_rmsd,
        energy_tolerance=options.energy_tolerance,
        energy_window=options.energy_window,
        temperature_k=options.temperature_k,
        stereo=options.stereo,
        max_isomers=options.max_isomers,
        select=options.select,
    )


def model_info(provenance: ModelProvenance, *, default_select: bool | None = None) -> ModelInfo:
    return ModelInfo(
        default_select=default_select,
        checkpoint=provenance.checkpoint,
        sha256=provenance.sha256,
        kind=provenance.kind,
        training_rounds=provenance.training_round,
        training_energy_calls=provenance.training_energy_calls,
        training_energy_model=provenance.training_energy_model,
        integration_steps=provenance.integration_steps or 0,
        versions=dict(provenance.versions),
    )


def build_response(ensemble: Ensemble, *, info: ModelInfo | None = None) -> ConformerResponse:
    """The JSON answer for one molecule: conformers lowest energy first (energies rounded to µeV, and the
    relative energies and weights computed from the rounded values, so the SDF rendered from this answer
    carries the same numbers), the checks, the provenance."""
    mol = ensemble.mol
    prov = ensemble.provenance
    options = prov.post_processing
    energies = [round(e, 6) for e in ensemble.energies_ev]
    relative = relative_energies_kcal_mol(energies).tolist() if energies else []
    weights = boltzmann_weights(energies, options.temperature_k).tolist() if energies else []
    conformers = [
        Conformer(
            rank=k,
            conformer_rank=k + 1,
            energy_ev=energies[k] if energies else None,
            relative_energy_kcal_mol=relative[k] if energies else None,
            boltzmann_weight=weights[k] if energies else None,
            positions=np.round(conf.GetPositions(), 5).tolist(),
        )
        for k, conf in enumerate(mol.GetConformers())
    ]
    checks = ensemble.checks
    return ConformerResponse(
        smiles=ensemble.smiles if ensemble.stereoisomer is not None else ensemble.input_smiles,
        input_smiles=ensemble.input_smiles,
        isomeric_smiles=ensemble.smiles,
        name=ensemble.name,
        stereoisomer=ensemble.stereoisomer,
        num_atoms=mol.GetNumAtoms(),
        elements=[a.GetSymbol() for a in mol.GetAtoms()],
        bonds=[(b.GetBeginAtomIdx(), b.GetEndAtomIdx(), b.GetBondTypeAsDouble()) for b in mol.GetBonds()],
        conformers=conformers,
        checks=Checks(
            passed=list(checks.passed),
            requested=checks.requested,
            returned=checks.returned,
            rejected=dict(checks.rejected),
            reflected=checks.reflected,
            pruned=checks.duplicates_removed,
            outside_energy_window=checks.outside_energy_window,
            repaired=checks.repaired,
            stereo_repaired=checks.stereo_repaired,
            mmff_relaxed=checks.mmff_relaxed,
            acyl_isomers_turned=checks.acyl_isomers_turned,
            clashes=checks.clashes,
        ),
        provenance=Provenance(
            model=info or model_info(prov.model),
            energy_model=prov.energy_model or "none",
            relaxed=options.relax,
            repaired=checks.repaired > 0,
            seed=prov.seed,
            timings_s={k: round(v, 3) for k, v in prov.timings_s.items()},
            post_processing=PostProcessingInfo(**options.to_dict()),
            pipeline=mol.GetProp(TAG_PIPELINE) if mol.HasProp(TAG_PIPELINE) else None,
        ),
    )
