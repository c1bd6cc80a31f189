"""The energy worker: claims evaluation jobs from Redis, evaluates energies and forces once, turns them
into the regression target and pushes the samples into the replay buffer (atomically with the ack).

Run any number of them, on this machine or others: ``adjoint-sampling worker energy --model xtb``. A worker
evaluates both kinds of job on its model's stream: Cartesian samples (:class:`buffer.jobs.EvaluationJob`, DW-4,
LJ-13) and torsional conformer samples (:class:`buffer.torsion_jobs.TorsionEvaluationJob`,
:func:`training.torsion_evaluation.evaluate_torsion_job`).
A worker that dies mid-batch loses nothing: its job is reclaimed by another worker after the idle
timeout, and the exactly-once push (``buffer.jobs``) keeps the buffer free of duplicates. While a
batch is being evaluated a heartbeat thread keeps the job's idle time low, so slow batches are not
mistaken for dead workers.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis
import torch

from buffer.codec import RecordFormatError, encode_replay_entries
from buffer.jobs import ClaimedJob, EvaluationJob, EvaluationQueue, JobState, JobStatus
from buffer.torsion_jobs import TorsionEvaluationJob, decode_job
from energy.protocol import EnergyModel, EnergyResult, Structures
from sampler.loss import adjoint_target
from sampler.replay import ReplaySamples
from sampler.state import SystemBatch
from training.torsion_evaluation import evaluate_torsion_job

__all__ = [
    "DelayedEnergy",
    "EnergyWorker",
    "EnergyWorkerConfig",
    "WorkerStats",
    "build_worker_energy",
    "default_consumer_name",
    "energy_stream_name",
    "evaluate_job",
    "evaluate_job_entries",
]

log = logging.getLogger(__name__)

SYNTHETIC_MODELS = ("dw4", "lj13")


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, kw_only=True)
class EnergyWorkerConfig:
    """Attributes:
    consumer: this worker's name in the consumer group (unique per live worker).
    jobs_per_claim: jobs taken at once (evaluated one after another).
    block_ms: how long one wait for new jobs lasts.
    reclaim_idle_ms: take over jobs another worker has held this long without a heartbeat.
    heartbeat_s: interval of the heartbeat while evaluating (default: a third of the idle timeout).
    """

    consumer: str = field(default_factory=default_consumer_name)
    jobs_per_claim: int = 1
    block_ms: int = 1000
    reclaim_idle_ms: int = 60_000
    heartbeat_s: float | None = None

    @property
    def heartbeat_interval_s(self) -> float:
        return self.heartbeat_s if self.heartbeat_s is not None else self.reclaim_idle_ms / 3000.0


@dataclass
class WorkerStats:
    jobs_done: int = 0
    jobs_duplicate: int = 0
    jobs_failed: int = 0
    structures: int = 0
    evaluate_seconds: float = 0.0


@dataclass(frozen=True)
class DelayedEnergy:
    """``model`` plus an artificial cost of ``seconds_per_structure`` per structure (a sleep): stands in
    for an expensive model (DFT, xTB on large molecules) in tests and benchmarks. Never for science."""

    model: EnergyModel
    seconds_per_structure: float

    @property
    def name(self) -> str:
        return self.model.name

    def evaluate(self, structures: Structures) -> EnergyResult:
        time.sleep(self.seconds_per_structure * structures.num_structures)
        return self.model.evaluate(structures)


def build_worker_energy(name: str) -> EnergyModel:
    """Synthetic systems by name (``dw4``, ``lj13``), otherwise the registry (``xtb``, ``mmff``, ...)."""
    if name in SYNTHETIC_MODELS:
        from training.synthetic import build_energy

        return build_energy(name)
    from energy.registry import build_energy_model

    return build_energy_model(name)


def energy_stream_name(energy_model: str) -> str:
    """The job stream ``worker energy --model NAME`` serves: the model's own name (built once to ask it)."""
    model = build_worker_energy(energy_model)
    name = model.name
    close = getattr(model, "close", None)
    if callable(close):
        close()
    return name


def _system_batch(structures: Structures, system_ids: torch.Tensor) -> SystemBatch:
    """The part of a sampler batch that the adjoint target needs (positions and graph membership)."""
    counts = structures.num_atoms
    n = structures.positions.shape[0]
    return SystemBatch(
        positions=structures.positions,
        node_features=structures.positions.new_zeros(n, 0),
        edge_index=torch.zeros(2, 0, dtype=torch.long),
        edge_features=structures.positions.new_zeros(0, 0),
        batch=torch.repeat_interleave(torch.arange(counts.shape[0]), counts),
        num_nodes=counts,
        system_ids=system_ids,
    )


def evaluate_job(model: EnergyModel, job: EvaluationJob) -> tuple[ReplaySamples | None, JobStatus]:
    """Evaluate once and build the buffer entries of the valid structures (``None`` if none is valid)."""
    samples, status, _ = _evaluate_cartesian(model, job)
    return samples, status


def evaluate_job_entries(model: EnergyModel, job: EvaluationJob) -> tuple[list[bytes], JobStatus]:
    """:func:`evaluate_job`'s valid entries encoded for the buffer, each tagged with its sample id ``JOB_ID:K``
    (``K``: the structure's index in the job), so a buffer can be audited for losses and duplicates."""
    samples, status, valid = _evaluate_cartesian(model, job)
    if samples is None:
        return [], status
    ids = [f"{job.job_id}:{k}" for k in torch.nonzero(valid).flatten().tolist()]
    return encode_replay_entries(samples, sample_ids=ids), status


def _evaluate_cartesian(model: EnergyModel, job: EvaluationJob) -> tuple[ReplaySamples | None, JobStatus, torch.Tensor]:
    """The valid structures' entries (``None`` if none), the status, and the validity mask ``[G]``."""
    s = job.structures
    result = model.evaluate(s)
    dtype = s.positions.dtype
    batch = _system_batch(s, job.system_ids)
    spec = job.adjoint
    forces = torch.where(torch.isfinite(result.forces), result.forces, 0.0).to(dtype)
    target = adjoint_target(batch, -forces, schedule=spec.schedule, tau=spec.tau, max_grad_norm=spec.max_grad_norm)
    row_ok = torch.isfinite(target).all(-1)
    bad_rows = torch.zeros(batch.num_graphs, dtype=torch.long).index_add_(0, batch.batch, (~row_ok).long())
    graph_ok = bad_rows == 0
    valid = result.valid & torch.isfinite(result.energies) & graph_ok
    energies = result.energies.to(dtype)
    for reason in {r for r, ok in zip(result.reasons, valid.tolist(), strict=True) if not ok}:
        log.debug("job %s: invalid structures (%s)", job.job_id, reason)
    status = JobStatus(
        state=JobState.DONE,
        evaluated=s.num_structures,
        valid=int(valid.sum()),
        energy_sum=float(energies[valid].sum()) if bool(valid.any()) else 0.0,
    )
    if not bool(valid.any()):
        return None, status, valid
    keep = valid[batch.batch]
    samples = ReplaySamples(
        system_ids=job.system_ids[valid],
        num_nodes=s.num_atoms[valid],
        positions=s.positions[keep],
        adjoint=target[keep],
        energies=energies[valid],
        model_version=torch.full((int(valid.sum()),), job.model_version, dtype=torch.long),
    )
    return samples, status, valid


@contextmanager
def _heartbeat(queue: EvaluationQueue, consumer: str, message_ids: list[str], interval_s: float) -> Iterator[None]:
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval_s):
            try:
                queue.touch(consumer, message_ids)
            except Exception as exc:  # a missed heartbeat only risks a duplicate evaluation
                log.warning("heartbeat failed: %s", exc)

    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class EnergyWorker:
    """Serves one energy model until ``stop`` is set (SIGTERM: finish the current job, then exit)."""

    def __init__(
        self,
        queue: EvaluationQueue,
        model: EnergyModel,
        config: EnergyWorkerConfig,
        *,
        stop: threading.Event | None = None,
    ) -> None:
        self.queue = queue
        self.model = model
        self.config = config
        self.stop = stop or threading.Event()
        self.stats = WorkerStats()

    def run(self, *, max_jobs: int | None = None, exit_when_idle_s: float | None = None) -> WorkerStats:
        """Claim and process jobs; return after ``max_jobs`` jobs, after ``exit_when_idle_s`` without
        work, or when ``stop`` is set."""
        c = self.config
        log.info("energy worker %s serving model %r from %s", c.consumer, self.queue.model, self.queue.stream)
        idle_since = time.monotonic()
        handled = 0
        while not self.stop.is_set() and (max_jobs is None or handled < max_jobs):
            jobs = self.queue.claim(
                c.consumer, count=c.jobs_per_claim, block_ms=c.block_ms, reclaim_idle_ms=c.reclaim_idle_ms
            )
            if not jobs:
                if exit_when_idle_s is not None and time.monotonic() - idle_since > exit_when_idle_s:
                    break
                continue
            with _heartbeat(self.queue, c.consumer, [j.message_id for j in jobs], c.heartbeat_interval_s):
                for job in jobs:
                    self.process(job)
                    handled += 1
            idle_since = time.monotonic()
        log.info("energy worker %s stopping: %s", c.consumer, self.stats)
        return self.stats

    def _evaluate(self, job: EvaluationJob | TorsionEvaluationJob) -> tuple[list[bytes], JobStatus]:
        """The job's encoded replay entries (valid samples only) and its status."""
        if isinstance(job, TorsionEvaluationJob):  # the torsional conformer model's samples
            return evaluate_torsion_job(self.model, job)
        return evaluate_job_entries(self.model, job)

    def process(self, claimed: ClaimedJob) -> None:
        """Evaluate one job and commit it; an error requeues it (or parks it after too many attempts)."""
        try:
            job = decode_job(claimed.payload)
        except (RecordFormatError, KeyError, TypeError, ValueError) as exc:
            self.queue.park(claimed, f"unreadable job: {exc}")
            self.stats.jobs_failed += 1
            return
        start = time.perf_counter()
        try:
            entries, status = self._evaluate(job)
        except Exception as exc:  # any model failure: requeue with the error, never lose the job
            state = self.queue.release(claimed, f"{type(exc).__name__}: {exc}", consumer=self.config.consumer)
            log.warning("job %s failed (attempt %d, now %s): %s", job.job_id, claimed.attempts, state, exc)
            self.stats.jobs_failed += 1
            return
        self.stats.evaluate_seconds += time.perf_counter() - start
        self.stats.structures += job.structures.num_structures
        status = JobStatus(**{**vars(status), "consumer": self.config.consumer})
        try:
            committed = self.queue.complete(claimed, entries, buffer=job.buffer, status=status)
        except redis.ResponseError as exc:  # e.g. the job names a buffer that does not exist
            self.queue.release(claimed, f"cannot store results: {exc}", consumer=self.config.consumer)
            self.stats.jobs_failed += 1
            return
        if committed:
            self.stats.jobs_done += 1
        else:
            self.stats.jobs_duplicate += 1
            log.info("job %s was already completed by another delivery; result dropped", job.job_id)
