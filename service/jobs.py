"""Sampling jobs of the HTTP service in Redis: a record per job, a result per molecule, a queue of job ids.

Keys (built by :class:`buffer.keys.RedisKeys`): the record ``P:sampling:job:ID`` (hash: state, request,
progress, times), the results ``P:sampling:job:ID:results`` (hash: SMILES index -> JSON answer or error)
and the queue ``P:sampling:queue`` (a stream of job ids read by the consumer group ``sampling-workers``).

Life of a job:

1. :meth:`AsyncJobStore.submit` (the API) writes the record and appends the id to the stream in one Lua
   script that first checks the queue depth (the stream length: unfinished jobs), so a full queue refuses
   atomically. The record expires after ``job_ttl_s`` unless finished sooner.
2. A worker :meth:`JobQueue.claim`-s the next id (``XREADGROUP``), first taking over any job another worker
   has held silently for ``reclaim_idle_ms`` (``XAUTOCLAIM``; a live worker's heartbeat keeps its jobs).
   :meth:`JobQueue.start` counts the attempt and marks the job running; past ``max_attempts`` it fails.
3. Each molecule's answer is stored once (``HSETNX``; a reclaimed job skips what is done) and counted in
   the record: progress is ``finished / total``.
4. :meth:`JobQueue.finish` acknowledges and deletes the stream entry, marks the record done (or failed),
   and sets record and results to expire after ``result_ttl_s``.

Everything stored is JSON (never pickle).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from buffer.keys import RedisKeys
from service.schemas import JobProgress, JobRequest, JobState, JobStatus, MoleculeResult

__all__ = ["CONSUMER_GROUP", "AsyncJobStore", "ClaimedJob", "JobQueue", "QueueFull", "new_job_id"]

log = logging.getLogger(__name__)

CONSUMER_GROUP = "sampling-workers"

# KEYS: stream, record. ARGV: max depth, job id, ttl, field, value, field, value, ...
_SUBMIT = """
local depth = redis.call('XLEN', KEYS[1])
if depth >= tonumber(ARGV[1]) then return -depth - 1 end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('XADD', KEYS[1], '*', 'job', ARGV[2])
return depth + 1
"""

# KEYS: record. ARGV: consumer, now, max attempts. Returns the attempt number, 0 when the record is gone
# (expired) or already finished, -n when this delivery exceeds max attempts (the job is marked failed).
_START = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'done' or state == 'failed' then return 0 end
local n = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if n > tonumber(ARGV[3]) then return -n end
redis.call('HSET', KEYS[1], 'state', 'running', 'consumer', ARGV[1])
if redis.call('HEXISTS', KEYS[1], 'started_at') == 0 then redis.call('HSET', KEYS[1], 'started_at', ARGV[2]) end
return n
"""

# KEYS: record, results. ARGV: index, answer JSON, failed (0/1), ttl. Returns 1 if stored, 0 if already
# there, -1 if the record is gone.
_STORE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('HINCRBY', KEYS[1], 'finished', 1)
if ARGV[3] == '1' then redis.call('HINCRBY', KEYS[1], 'failed', 1) end
return 1
"""

# KEYS: stream, record, results. ARGV: group, message id, state, now, ttl, error.
_FINISH = """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local expires = tonumber(ARGV[4]) + tonumber(ARGV[5])
redis.call('HSET', KEYS[2], 'state', ARGV[3], 'finished_at', ARGV[4], 'expires_at', expires)
if ARGV[6] ~= '' then redis.call('HSET', KEYS[2], 'error', ARGV[6]) end
redis.call('EXPIRE', KEYS[2], ARGV[5])
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('EXPIRE', KEYS[3], ARGV[5]) end
return 1
"""


class QueueFull(RuntimeError):
    """The queue holds ``depth`` unfinished jobs, its limit."""

    def __init__(self, depth: int) -> None:
        super().__init__(f"the job queue is full ({depth} unfinished jobs)")
        self.depth = depth


def new_job_id() -> str:
    return uuid.uuid4().hex


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _status_from_record(job_id: str, raw: dict[Any, Any]) -> JobStatus:
    r = {_text(k): _text(v) for k, v in raw.items()}
    total, finished, failed = int(r.get("total", 0)), int(r.get("finished", 0)), int(r.get("failed", 0))

    def when(key: str) -> float | None:
        return float(r[key]) if key in r else None

    return JobStatus(
        id=job_id,
        status=JobState(r.get("state", "queued")),
        progress=JobProgress(
            total=total, finished=finished, failed=failed, fraction=round(finished / total, 4) if total else 0.0
        ),
        created_at=float(r.get("created_at", 0.0)),
        started_at=when("started_at"),
        finished_at=when("finished_at"),
        expires_at=when("expires_at"),
        attempts=int(r.get("attempts", 0)),
        error=r.get("error"),
        result_url=f"/v1/jobs/{job_id}/result",
    )


class AsyncJobStore:
    """The API's side: submit, read status and results (``redis.asyncio``, never blocking the loop)."""

    def __init__(self, client: aioredis.Redis, keys: RedisKeys, *, max_queue: int, job_ttl_s: int) -> None:
        self.client = client
        self.keys = keys
        self.max_queue = max_queue
        self.job_ttl_s = job_ttl_s
        self._submit = client.register_script(_SUBMIT)

    async def submit(self, request: JobRequest) -> JobStatus:
        """Queue ``request``; :class:`QueueFull` when ``max_queue`` jobs are unfinished."""
        job_id = new_job_id()
        record = {
            "state": JobState.QUEUED.value,
            "created_at": repr(time.time()),
            "total": str(len(request.smiles)),
            "finished": "0",
            "failed": "0",
            "attempts": "0",
            "request": request.model_dump_json(),
        }
        args: list[Any] = [self.max_queue, job_id, self.job_ttl_s]
        for k, v in record.items():
            args += [k, v]
        depth = int(await self._submit(keys=[self.keys.sampling_queue(), self.keys.sampling_job(job_id)], args=args))
        if depth < 0:
            raise QueueFull(-depth - 1)
        return _status_from_record(job_id, record)

    async def status(self, job_id: str) -> JobStatus | None:
        raw = await self.client.hgetall(self.keys.sampling_job(job_id))
        return _status_from_record(job_id, raw) if raw else None

    async def results(self, job_id: str) -> list[MoleculeResult]:
        """The stored answers in SMILES order (a molecule without one yet is left out)."""
        raw = await self.client.hgetall(self.keys.sampling_results(job_id))
        answers = [MoleculeResult.model_validate_json(v) for v in raw.values()]
        return sorted(answers, key=lambda a: a.index)

    async def depth(self) -> int:
        return int(await self.client.xlen(self.keys.sampling_queue()))

    async def ping(self) -> bool:
        return bool(await self.client.ping())


@dataclass(frozen=True)
class ClaimedJob:
    """One delivery of a job to a worker."""

    message_id: str
    job_id: str


class JobQueue:
    """The workers' side (synchronous ``redis``; runs in worker threads or processes)."""

    def __init__(
        self, client: redis.Redis, keys: RedisKeys, *, max_attempts: int, result_ttl_s: int, job_ttl_s: int
    ) -> None:
        self.client = client
        self.keys = keys
        self.max_attempts = max_attempts
        self.result_ttl_s = result_ttl_s
        self.job_ttl_s = job_ttl_s
        self.stream = keys.sampling_queue()
        self._start = client.register_script(_START)
        self._store = client.register_script(_STORE)
        self._finish = client.register_script(_FINISH)
        self._group_ready = False

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self.client.xgroup_create(self.stream, CONSUMER_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def claim(self, consumer: str, *, block_ms: int, reclaim_idle_ms: int) -> ClaimedJob | None:
        """The next job for ``consumer``: an abandoned one first, else a new one (waits up to ``block_ms``)."""
        self._ensure_group()
        try:
            reclaimed: Any = self.client.xautoclaim(
                self.stream, CONSUMER_GROUP, consumer, min_idle_time=reclaim_idle_ms, start_id="0-0", count=1
            )
            entries = reclaimed[1]
            if not entries:
                read: Any = self.client.xreadgroup(
                    CONSUMER_GROUP, consumer, {self.stream: ">"}, count=1, block=block_ms
                )
                entries = read[0][1] if read else []
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):  # the stream was deleted (e.g. a flushed Redis): create it again
                self._group_ready = False
                return None
            raise
        for message_id, fields in entries:
            if fields and b"job" in fields:
                return ClaimedJob(_text(message_id), _text(fields[b"job"]))
            self.client.xack(self.stream, CONSUMER_GROUP, message_id)  # a deleted entry XAUTOCLAIM still listed
        return None

    def start(self, job: ClaimedJob, consumer: str) -> tuple[JobRequest | None, set[int]]:
        """Mark running; the request and the molecules already answered (``None``: drop this delivery)."""
        record_key = self.keys.sampling_job(job.job_id)
        attempt = int(self._start(keys=[record_key], args=[consumer, repr(time.time()), self.max_attempts]))
        if attempt == 0:
            log.info("job %s expired or already finished; dropping the delivery", job.job_id)
            self.client.xack(self.stream, CONSUMER_GROUP, job.message_id)
            self.client.xdel(self.stream, job.message_id)
            return None, set()
        if attempt < 0:
            self.finish(job, JobState.FAILED, f"gave up after {-attempt - 1} attempts (a worker died each time)")
            return None, set()
        raw: Any = self.client.hget(record_key, "request")
        done = {int(k) for k in self.client.hkeys(self.keys.sampling_results(job.job_id))}
        return JobRequest.model_validate_json(raw), done

    def store(self, job: ClaimedJob, answer: MoleculeResult) -> bool:
        """Store one molecule's answer (once); ``False`` when the job record has expired."""
        stored = self._store(
            keys=[self.keys.sampling_job(job.job_id), self.keys.sampling_results(job.job_id)],
            args=[answer.index, answer.model_dump_json(), int(answer.error is not None), self.job_ttl_s],
        )
        return int(stored) >= 0

    def finish(self, job: ClaimedJob, state: JobState, error: str | None = None) -> None:
        self._finish(
            keys=[self.stream, self.keys.sampling_job(job.job_id), self.keys.sampling_results(job.job_id)],
            args=[CONSUMER_GROUP, job.message_id, state.value, repr(time.time()), self.result_ttl_s, error or ""],
        )

    def touch(self, consumer: str, message_ids: Sequence[str]) -> None:
        """Heartbeat: reset the idle time of the jobs ``consumer`` works on (not counted as a delivery)."""
        if message_ids:
            self.client.xclaim(self.stream, CONSUMER_GROUP, consumer, 0, list(message_ids), justid=True)

    def depth(self) -> int:
        return int(self.client.xlen(self.stream))
