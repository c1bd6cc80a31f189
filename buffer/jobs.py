"""Energy evaluations as jobs on a Redis stream, consumed by a pool of energy workers.

Life of a job (ALGORITHM.md section 5, step 2a, spread over processes):

1. A trainer samples terminal states ``X_1`` with its current control and :meth:`EvaluationQueue.enqueue`-s
   them in batches: ``XADD`` to the model's stream, guarded by ``SET NX`` on the job's status key, so a
   job id is enqueued at most once (a restarted trainer re-creating the same job is a no-op).
2. An energy worker :meth:`~EvaluationQueue.claim`-s jobs with ``XREADGROUP`` (consumer group
   ``energy-workers``); first it ``XAUTOCLAIM``-s jobs that another consumer has held longer than the
   idle timeout (a dead worker's jobs). Every delivery counts as an attempt.
3. The worker evaluates energies and forces and :meth:`~EvaluationQueue.complete`-s the job: one Lua
   script acknowledges the message (``XACK``), and pushes the entries into the replay buffer and marks
   the job done only if that acknowledgement was the first — so every sample lands in the buffer exactly
   once, however many deliveries a job had (at-least-once delivery, idempotent writes).
4. A failed attempt is :meth:`~EvaluationQueue.release`-d (requeued with its error); a job delivered more
   than ``max_attempts`` times is parked, with its last error, on the model's ``parked`` stream.

Job status is a string enum kept (JSON, with a TTL) under ``P:job:JOB_ID``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import numpy as np
import redis
import torch

from buffer.codec import Record, decode_record, encode_record
from buffer.keys import RedisKeys, validate_name
from buffer.redis import LUA_PUSH_ENTRIES
from energy.protocol import Structures
from sampler.schedule import GeometricNoiseSchedule

__all__ = [
    "AdjointSpec",
    "ClaimedJob",
    "EvaluationJob",
    "EvaluationQueue",
    "JobState",
    "JobStatus",
    "PostableJob",
    "encode_job",
    "job_fields",
    "record_tensor",
]

log = logging.getLogger(__name__)

EVALUATION_JOB = "evaluation-job"
CONSUMER_GROUP = "energy-workers"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    PARKED = "parked"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.PARKED)


def _structure_arrays(s: Structures) -> dict[str, np.ndarray]:
    return {
        "positions": s.positions.detach().cpu().numpy(),
        "num_atoms": s.num_atoms.cpu().numpy(),
        "atomic_numbers": s.atomic_numbers.cpu().numpy(),
        "total_charge": s.total_charge.cpu().numpy(),
        "multiplicity": s.multiplicity.cpu().numpy(),
    }


def record_tensor(record: Record, name: str) -> torch.Tensor:
    """One array of a decoded record as a tensor (copied out of the record's buffer)."""
    return torch.from_numpy(np.array(record.arrays[name]))


def encode_job(kind: str, job: Any, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> bytes:
    """A job record of ``kind``: the fields every evaluation job has (``job_id``, ``buffer``, ``model_version``,
    ``structures`` with their connection tables, ``system_ids``) plus the kind's own ``meta`` and ``arrays``."""
    s: Structures = job.structures
    common = {
        "job_id": job.job_id,
        "buffer": job.buffer,
        "model_version": job.model_version,
        "connection_tables": list(s.connection_tables) if s.connection_tables is not None else None,
    }
    return encode_record(
        kind, {**common, **meta}, {**_structure_arrays(s), "system_ids": job.system_ids.cpu().numpy(), **arrays}
    )


def job_fields(record: Record) -> dict[str, Any]:
    """Inverse of :func:`encode_job` for the common fields: keyword arguments of the job's constructor."""
    m = record.meta
    tables = m["connection_tables"]
    structures = Structures(
        positions=record_tensor(record, "positions"),
        num_atoms=record_tensor(record, "num_atoms"),
        atomic_numbers=record_tensor(record, "atomic_numbers"),
        total_charge=record_tensor(record, "total_charge"),
        multiplicity=record_tensor(record, "multiplicity"),
        connection_tables=tuple(tables) if tables is not None else None,
    )
    return {
        "job_id": m["job_id"],
        "buffer": m["buffer"],
        "structures": structures,
        "system_ids": record_tensor(record, "system_ids"),
        "model_version": int(m["model_version"]),
    }


@dataclass(frozen=True, kw_only=True)
class JobStatus:
    """What is known about a job. ``evaluated``/``valid``/``energy_sum`` are filled in when done."""

    state: JobState
    attempts: int = 0
    consumer: str | None = None
    error: str | None = None
    evaluated: int = 0
    valid: int = 0
    energy_sum: float = 0.0
    updated_at: float = 0.0

    def to_json(self) -> str:
        return json.dumps({**dataclasses.asdict(self), "state": self.state.value, "updated_at": time.time()})

    @classmethod
    def from_json(cls, raw: bytes | str) -> JobStatus:
        d = json.loads(raw)
        return cls(**{**d, "state": JobState(d["state"])})


@dataclass(frozen=True, kw_only=True)
class AdjointSpec:
    """How a worker turns ``grad E`` into the buffer's regression target ``-clip(grad g(X_1))``
    (``sampler.loss.adjoint_target``): temperature, per-particle clip, and the noise schedule."""

    tau: float
    max_grad_norm: float
    schedule: GeometricNoiseSchedule


@dataclass(frozen=True, kw_only=True)
class EvaluationJob:
    """``G`` unevaluated terminal samples bound for replay buffer ``buffer``.

    Attributes:
        job_id: unique and deterministic (e.g. ``run:r12:3``), letters/digits/``.:_-``.
        buffer: name of the replay buffer the results go to.
        structures: what the energy model evaluates (positions ``X_1``, elements, charge, spin).
        system_ids: ``[G]`` the system of each structure (the trainer's id, kept in the buffer).
        model_version: the training round whose control produced the samples.
        adjoint: how the worker computes the regression target from the forces.
    """

    job_id: str
    buffer: str
    structures: Structures
    system_ids: torch.Tensor
    model_version: int
    adjoint: AdjointSpec

    def __post_init__(self) -> None:
        validate_name("job id", self.job_id, allow_colon=True)
        validate_name("buffer name", self.buffer)
        if self.system_ids.shape != (self.structures.num_structures,):
            g = self.structures.num_structures
            raise ValueError(f"system_ids must be [{g}], got {tuple(self.system_ids.shape)}")

    def encode(self) -> bytes:
        meta = {
            "tau": self.adjoint.tau,
            "max_grad_norm": self.adjoint.max_grad_norm,
            "schedule": dataclasses.asdict(self.adjoint.schedule),
        }
        return encode_job(EVALUATION_JOB, self, meta, {})

    @classmethod
    def decode(cls, blob: bytes) -> EvaluationJob:
        record = decode_record(blob, EVALUATION_JOB)
        m = record.meta
        return cls(
            **job_fields(record),
            adjoint=AdjointSpec(
                tau=float(m["tau"]),
                max_grad_norm=float(m["max_grad_norm"]),
                schedule=GeometricNoiseSchedule(**m["schedule"]),
            ),
        )


class PostableJob(Protocol):
    """What :meth:`EvaluationQueue.enqueue` needs of a job: its id and its bytes (:class:`EvaluationJob`, or
    :class:`buffer.torsion_jobs.TorsionEvaluationJob` for the torsional conformer model)."""

    @property
    def job_id(self) -> str: ...

    def encode(self) -> bytes: ...


@dataclass(frozen=True)
class ClaimedJob:
    """One delivery of a job to a worker (``attempts`` counts this delivery)."""

    message_id: str
    job_id: str
    attempts: int
    payload: bytes

    def decode(self) -> EvaluationJob:
        return EvaluationJob.decode(self.payload)


_ENQUEUE = """
if redis.call('SET', KEYS[2], ARGV[3], 'NX', 'EX', ARGV[4]) then
  redis.call('XADD', KEYS[1], '*', 'job', ARGV[1], 'payload', ARGV[2])
  return 1
end
return 0
"""

# KEYS: attempts hash, status key. ARGV: job id, consumer, now, ttl. Returns the attempt number.
_MARK_CLAIMED = """
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
local raw = redis.call('GET', KEYS[2])
if raw then
  local s = cjson.decode(raw)
  if s.state == 'queued' or s.state == 'running' then
    s.state = 'running'; s.consumer = ARGV[2]; s.attempts = n; s.updated_at = tonumber(ARGV[3])
    redis.call('SET', KEYS[2], cjson.encode(s), 'EX', ARGV[4])
  end
end
return n
"""

# KEYS: stream, status, attempts, buffer entries, buffer meta.
# ARGV: group, message id, job id, done-status JSON, ttl, entry blobs...
_COMPLETE = (
    LUA_PUSH_ENTRIES
    + """
if #ARGV > 5 and redis.call('HEXISTS', KEYS[5], 'capacity') == 0 then
  return redis.error_reply('no replay buffer at ' .. KEYS[5])
end
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
local raw = redis.call('GET', KEYS[2])
if raw then
  local state = cjson.decode(raw).state
  if state == 'done' or state == 'parked' then return 0 end
end
if acked == 0 then return 0 end
redis.call('HDEL', KEYS[3], ARGV[3])
local blobs = {}
for i = 6, #ARGV do blobs[#blobs + 1] = ARGV[i] end
if #blobs > 0 then push_entries(KEYS[4], KEYS[5], blobs) end
redis.call('SET', KEYS[2], ARGV[4], 'EX', ARGV[5])
return 1
"""
)

# KEYS: stream, status. ARGV: group, message id, job id, payload, status JSON, ttl.
_RELEASE = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('XADD', KEYS[1], '*', 'job', ARGV[3], 'payload', ARGV[4])
redis.call('SET', KEYS[2], ARGV[5], 'EX', ARGV[6])
return 1
"""

# KEYS: stream, status, attempts, parked stream. ARGV: group, message id, job id, payload, status, ttl, error.
_PARK = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[3])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', 10000, '*', 'job', ARGV[3], 'error', ARGV[7], 'payload', ARGV[4])
redis.call('SET', KEYS[2], ARGV[5], 'EX', ARGV[6])
return 1
"""


class EvaluationQueue:
    """The stream of evaluation jobs for one energy model, with its consumer group.

    Attributes:
        max_attempts: deliveries before a job is parked.
        status_ttl_s: how long job statuses are kept (they make enqueueing idempotent meanwhile).
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        model: str,
        keys: RedisKeys | None = None,
        max_attempts: int = 3,
        status_ttl_s: int = 7 * 24 * 3600,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.client = client
        self.model = model
        self.keys = keys or RedisKeys()
        self.max_attempts = max_attempts
        self.status_ttl_s = status_ttl_s
        self.stream = self.keys.job_stream(model)
        self._attempts = self.keys.job_attempts(model)
        self._parked = self.keys.parked_jobs(model)
        self._enqueue = client.register_script(_ENQUEUE)
        self._mark = client.register_script(_MARK_CLAIMED)
        self._complete = client.register_script(_COMPLETE)
        self._release = client.register_script(_RELEASE)
        self._park = client.register_script(_PARK)
        try:
            client.xgroup_create(self.stream, CONSUMER_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # -- producer side ------------------------------------------------------------------------------
    def enqueue(self, job: PostableJob) -> bool:
        """Post a job; ``False`` (and nothing posted) if a job with this id is already known."""
        status = JobStatus(state=JobState.QUEUED).to_json()
        added = self._enqueue(
            keys=[self.stream, self.keys.job_status(job.job_id)],
            args=[job.job_id, job.encode(), status, self.status_ttl_s],
        )
        return bool(added)

    def statuses(self, job_ids: Sequence[str]) -> list[JobStatus | None]:
        if not job_ids:
            return []
        raw = self.client.mget([self.keys.job_status(j) for j in job_ids])
        return [None if r is None else JobStatus.from_json(r) for r in raw]

    def status(self, job_id: str) -> JobStatus | None:
        return self.statuses([job_id])[0]

    # -- consumer side ------------------------------------------------------------------------------
    def claim(
        self, consumer: str, *, count: int = 1, block_ms: int | None = 1000, reclaim_idle_ms: int | None = 60_000
    ) -> list[ClaimedJob]:
        """Up to ``count`` jobs for ``consumer``: first jobs idle (unacknowledged) for longer than
        ``reclaim_idle_ms`` in another consumer's hands, else new ones (waiting up to ``block_ms``).
        Jobs past ``max_attempts`` deliveries are parked here, not returned."""
        if block_ms is not None and block_ms < 1:
            raise ValueError("block_ms must be >= 1 (0 would block forever) or None")
        messages: list[tuple[bytes, dict[bytes, bytes]]] = []
        if reclaim_idle_ms is not None:
            reclaimed: Any = self.client.xautoclaim(
                self.stream, CONSUMER_GROUP, consumer, min_idle_time=reclaim_idle_ms, start_id="0-0", count=count
            )
            messages = [m for m in reclaimed[1] if m and m[1]]
            if messages:
                log.info("%s reclaimed %d job(s) idle for over %d ms", consumer, len(messages), reclaim_idle_ms)
        if not messages:
            streams: dict[Any, Any] = {self.stream: ">"}
            reply: Any = self.client.xreadgroup(CONSUMER_GROUP, consumer, streams, count=count, block=block_ms)
            messages = [m for _, batch in reply for m in batch] if reply else []
        claimed = []
        for message_id, fields in messages:
            job_id = fields[b"job"].decode()
            attempts = int(
                self._mark(
                    keys=[self._attempts, self.keys.job_status(job_id)],
                    args=[job_id, consumer, time.time(), self.status_ttl_s],
                )
            )
            job = ClaimedJob(message_id.decode(), job_id, attempts, fields[b"payload"])
            if attempts > self.max_attempts:
                last = self.status(job_id)
                reason = last.error if last is not None and last.error else "the workers died without an error"
                self.park(job, f"gave up after {attempts - 1} deliveries; last error: {reason}")
                continue
            claimed.append(job)
        return claimed

    def complete(self, job: ClaimedJob, entries: Sequence[bytes], *, buffer: str, status: JobStatus) -> bool:
        """Acknowledge ``job`` and push its encoded replay ``entries`` into ``buffer``, atomically;
        ``False`` if this delivery was a duplicate (the job was already completed): nothing is pushed."""
        done = dataclasses.replace(status, state=JobState.DONE, attempts=job.attempts).to_json()
        result = self._complete(
            keys=[
                self.stream,
                self.keys.job_status(job.job_id),
                self._attempts,
                self.keys.buffer_entries(buffer),
                self.keys.buffer_meta(buffer),
            ],
            args=[CONSUMER_GROUP, job.message_id, job.job_id, done, self.status_ttl_s, *entries],
        )
        return bool(result)

    def release(self, job: ClaimedJob, error: str, *, consumer: str | None = None) -> JobState:
        """A failed attempt: requeue the job with its error, or park it if out of attempts."""
        if job.attempts >= self.max_attempts:
            self.park(job, f"failed {job.attempts} times; last error: {error}")
            return JobState.PARKED
        status = JobStatus(state=JobState.QUEUED, attempts=job.attempts, consumer=consumer, error=error).to_json()
        self._release(
            keys=[self.stream, self.keys.job_status(job.job_id)],
            args=[CONSUMER_GROUP, job.message_id, job.job_id, job.payload, status, self.status_ttl_s],
        )
        return JobState.QUEUED

    def park(self, job: ClaimedJob, error: str) -> None:
        log.error("parking job %s: %s", job.job_id, error)
        status = JobStatus(state=JobState.PARKED, attempts=job.attempts, error=error).to_json()
        self._park(
            keys=[self.stream, self.keys.job_status(job.job_id), self._attempts, self._parked],
            args=[CONSUMER_GROUP, job.message_id, job.job_id, job.payload, status, self.status_ttl_s, error],
        )

    def touch(self, consumer: str, message_ids: Sequence[str]) -> None:
        """Heartbeat: reset the idle time of jobs ``consumer`` is still working on, so they are not
        reclaimed from a live worker (``XCLAIM ... JUSTID`` does not count as a delivery)."""
        if message_ids:
            self.client.xclaim(self.stream, CONSUMER_GROUP, consumer, 0, list(message_ids), justid=True)

    # -- inspection ---------------------------------------------------------------------------------
    def pending(self) -> list[dict[str, Any]]:
        """Delivered but unacknowledged jobs: ``message_id``, ``consumer``, idle ms, deliveries."""
        return list(self.client.xpending_range(self.stream, CONSUMER_GROUP, "-", "+", 10_000))

    def backlog(self) -> int:
        """Jobs in the stream (queued or in progress)."""
        return int(self.client.xlen(self.stream))

    def parked(self, count: int = 100) -> list[tuple[str, str]]:
        """``(job id, error)`` of parked jobs, oldest first."""
        entries: Any = self.client.xrange(self._parked, count=count)
        return [(fields[b"job"].decode(), fields[b"error"].decode()) for _, fields in entries]
