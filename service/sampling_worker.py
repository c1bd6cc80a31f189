"""The sampling worker: takes jobs from the service's queue, samples each molecule on the engine's
threads, stores every answer as it comes (progress), and finishes the job.

Embedded mode runs it as a thread of the API process (``inprocess_workers``); ``adjoint-sampling worker
sample`` runs it as a process of its own (any number, on any machine that reaches Redis). A worker that
dies mid-job loses nothing: its job is taken over after ``reclaim_idle_s`` and the molecules already
answered are not sampled again. A lost Redis connection is waited out, never fatal.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis

from service.engine import SamplingEngine
from service.jobs import ClaimedJob, JobQueue
from service.schemas import ConformerResponse, JobRequest, JobState, MoleculeResult

__all__ = ["SamplingWorker", "WorkerConfig", "default_consumer_name"]

log = logging.getLogger(__name__)


def default_consumer_name(suffix: str = "") -> str:
    return f"{socket.gethostname()}-{os.getpid()}{suffix}"


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    """Attributes:
    consumer: this worker's unique name in the consumer group.
    block_ms: how long one wait for a new job lasts.
    reclaim_idle_ms: take over jobs another worker has held this long without a heartbeat.
    heartbeat_s: heartbeat interval while working on a job.
    retry_s: wait after a Redis error before trying again.
    """

    consumer: str
    block_ms: int = 1000
    reclaim_idle_ms: int = 300_000
    heartbeat_s: float | None = None
    retry_s: float = 1.0

    @property
    def heartbeat_interval_s(self) -> float:
        return self.heartbeat_s if self.heartbeat_s is not None else max(0.1, self.reclaim_idle_ms / 3000.0)


@contextmanager
def _heartbeat(queue: JobQueue, consumer: str, message_id: str, interval_s: float) -> Iterator[None]:
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval_s):
            try:
                queue.touch(consumer, [message_id])
            except Exception as exc:  # a missed heartbeat only risks a second worker repeating molecules
                log.warning("heartbeat failed: %s", exc)

    thread = threading.Thread(target=beat, name=f"heartbeat-{consumer}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class SamplingWorker:
    """Serves the queue until ``stop`` is set (then finishes the current molecule and leaves the job to be
    taken over)."""

    def __init__(
        self,
        queue: JobQueue,
        engine: SamplingEngine,
        config: WorkerConfig,
        *,
        stop: threading.Event | None = None,
        on_answer: Callable[[ConformerResponse, float], None] | None = None,
        on_finished: Callable[[JobState], None] | None = None,
    ) -> None:
        self.queue = queue
        self.engine = engine
        self.config = config
        self.stop = stop or threading.Event()
        self.on_answer = on_answer
        self.on_finished = on_finished
        self.jobs_done = 0

    def run(self, *, max_jobs: int | None = None, exit_when_idle_s: float | None = None) -> int:
        """Process jobs; return the number finished (after ``max_jobs``, idleness, or ``stop``)."""
        c = self.config
        log.info("sampling worker %s serving %s", c.consumer, self.queue.stream)
        idle_since = time.monotonic()
        while not self.stop.is_set() and (max_jobs is None or self.jobs_done < max_jobs):
            try:
                job = self.queue.claim(c.consumer, block_ms=c.block_ms, reclaim_idle_ms=c.reclaim_idle_ms)
                if job is None:
                    if exit_when_idle_s is not None and time.monotonic() - idle_since > exit_when_idle_s:
                        break
                    continue
                with _heartbeat(self.queue, c.consumer, job.message_id, c.heartbeat_interval_s):
                    self.process(job)
                idle_since = time.monotonic()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning(
                    "sampling worker %s: Redis unreachable (%s); retrying in %.1f s", c.consumer, exc, c.retry_s
                )
                self.stop.wait(c.retry_s)
            except Exception:  # a worker never dies of one job: the job is retried after reclaim, then failed
                log.exception("sampling worker %s: unexpected error; continuing in %.1f s", c.consumer, c.retry_s)
                self.stop.wait(c.retry_s)
        log.info("sampling worker %s stopping after %d jobs", c.consumer, self.jobs_done)
        return self.jobs_done

    def process(self, job: ClaimedJob) -> None:
        request, done = self.queue.start(job, self.config.consumer)
        if request is None:
            return
        log.info("job %s: %d molecules (%d already done)", job.job_id, len(request.smiles), len(done))
        for index, smiles in enumerate(request.smiles):
            if index in done:
                continue
            if self.stop.is_set():
                return  # another worker (or this one, restarted) takes the job over
            answer = self._sample_one(index, smiles, request)
            if not self.queue.store(job, answer):
                log.info("job %s expired while running; abandoning it", job.job_id)
                self.queue.finish(job, JobState.FAILED, "expired while running")
                return
        self.queue.finish(job, JobState.DONE)
        self.jobs_done += 1
        if self.on_finished is not None:
            self.on_finished(JobState.DONE)

    def _sample_one(self, index: int, smiles: str, request: JobRequest) -> MoleculeResult:
        start = time.perf_counter()
        future = self.engine.submit(self.engine.sample, smiles, request.num_conformers, request)
        try:
            answers = future.result()
        except Exception as exc:  # one molecule failing must not fail the others
            log.warning("job molecule %d (%s) failed: %s: %s", index, smiles, type(exc).__name__, exc)
            return MoleculeResult(index=index, smiles=smiles, error=f"{type(exc).__name__}: {exc}")
        if self.on_answer is not None:
            for answer in answers:
                self.on_answer(answer, time.perf_counter() - start)
        if request.stereo == "enumerate":
            return MoleculeResult(index=index, smiles=smiles, stereoisomers=answers)
        return MoleculeResult(index=index, smiles=smiles, result=answers[0])
