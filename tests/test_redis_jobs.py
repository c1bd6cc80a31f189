"""Evaluation jobs through a real Redis server: exactly-once results, retries, parking, serialization."""

from __future__ import annotations

import struct
import time
import uuid

import pytest
import redis
import torch

from buffer.codec import RecordFormatError, decode_record, encode_record, encode_replay_entries
from buffer.jobs import AdjointSpec, EvaluationJob, EvaluationQueue, JobState
from buffer.keys import RedisKeys
from buffer.redis import RedisReplayBuffer
from energy.protocol import EnergyResult, Structures
from energy.synthetic import DoubleWell
from sampler.loss import adjoint_target
from sampler.schedule import GeometricNoiseSchedule
from training.energy_worker import EnergyWorker, EnergyWorkerConfig, _system_batch, evaluate_job

pytestmark = pytest.mark.redis

SPEC = AdjointSpec(tau=1.0, max_grad_norm=100.0, schedule=GeometricNoiseSchedule(sigma_max=2.0))


@pytest.fixture
def keys() -> RedisKeys:
    return RedisKeys(f"t{uuid.uuid4().hex[:12]}")


def dw4_job(job_id: str, buffer: str, count: int, seed: int, version: int = 0) -> EvaluationJob:
    g = torch.Generator().manual_seed(seed)
    positions = 2.0 * torch.randn(count, 4, 2, generator=g)
    return EvaluationJob(
        job_id=job_id,
        buffer=buffer,
        structures=Structures.uniform(positions),
        system_ids=torch.zeros(count, dtype=torch.long),
        model_version=version,
        adjoint=SPEC,
    )


def expected_entries(job: EvaluationJob) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Known answer: DW-4 energies and the adjoint target, computed directly."""
    energy = DoubleWell()
    x = job.structures.positions.view(-1, 4, 2)
    e, f = energy.energy_and_forces(x)
    batch = _system_batch(job.structures, job.system_ids)
    target = adjoint_target(batch, -f.reshape(-1, 2), schedule=SPEC.schedule, tau=SPEC.tau, max_grad_norm=100.0)
    return job.structures.positions, target, e


class Failing:
    """An energy model that raises for every batch (a poison job or a broken installation)."""

    name = "dw4"

    def evaluate(self, structures: Structures) -> EnergyResult:
        raise RuntimeError("SCF did not converge")


def worker(queue: EvaluationQueue, model: object, name: str = "w1", idle_ms: int = 60_000) -> EnergyWorker:
    config = EnergyWorkerConfig(consumer=name, block_ms=20, reclaim_idle_ms=idle_ms)
    return EnergyWorker(queue, model, config)  # type: ignore[arg-type]


def test_worker_pushes_known_energies_and_targets(client: redis.Redis, keys: RedisKeys) -> None:
    buf = RedisReplayBuffer(client, capacity=100, name="run", keys=keys)
    queue = EvaluationQueue(client, model="dw4", keys=keys)
    jobs = [dw4_job(f"run:r0:{k}", "run", 3, seed=k, version=7) for k in range(3)]
    assert all(queue.enqueue(j) for j in jobs)
    stats = worker(queue, DoubleWell()).run(max_jobs=3)
    assert stats.jobs_done == 3 and stats.structures == 9
    entries = buf.entries()
    assert entries is not None and entries.num_graphs == 9
    for k, job in enumerate(jobs):
        pos, target, e = expected_entries(job)
        rows = slice(12 * k, 12 * (k + 1))
        torch.testing.assert_close(entries.positions[rows], pos)
        torch.testing.assert_close(entries.adjoint[rows], target)
        torch.testing.assert_close(entries.energies[3 * k : 3 * (k + 1)], e)
    assert entries.model_version.tolist() == [7] * 9
    status = queue.status("run:r0:1")
    assert status is not None and status.state is JobState.DONE and status.valid == 3
    assert status.energy_sum == pytest.approx(float(expected_entries(jobs[1])[2].sum()), rel=1e-6)
    assert queue.backlog() == 0 and queue.pending() == []


def test_enqueue_is_idempotent_by_job_id(client: redis.Redis, keys: RedisKeys) -> None:
    RedisReplayBuffer(client, capacity=100, name="run", keys=keys)
    queue = EvaluationQueue(client, model="dw4", keys=keys)
    job = dw4_job("run:r0:0", "run", 2, seed=0)
    assert queue.enqueue(job) is True
    assert queue.enqueue(job) is False
    assert queue.backlog() == 1
    worker(queue, DoubleWell()).run(max_jobs=1)
    assert queue.enqueue(job) is False  # done jobs are not redone either
    assert queue.backlog() == 0


def test_second_delivery_of_a_completed_job_pushes_nothing(client: redis.Redis, keys: RedisKeys) -> None:
    """A slow worker's job is reclaimed by another; both finish: the samples land once."""
    buf = RedisReplayBuffer(client, capacity=100, name="run", keys=keys)
    queue = EvaluationQueue(client, model="dw4", keys=keys)
    queue.enqueue(dw4_job("run:r0:0", "run", 4, seed=1))
    (slow,) = queue.claim("slow", block_ms=10, reclaim_idle_ms=None)
    time.sleep(0.03)
    (fast,) = queue.claim("fast", block_ms=10, reclaim_idle_ms=20)
    assert fast.message_id == slow.message_id and fast.attempts == 2
    samples, status = evaluate_job(DoubleWell(), fast.decode())
    assert samples is not None
    assert queue.complete(fast, encode_replay_entries(samples), buffer="run", status=status) is True
    assert queue.complete(slow, encode_replay_entries(samples), buffer="run", status=status) is False
    assert len(buf) == 4 and buf.total_pushed == 4


def test_failing_jobs_are_retried_then_parked_with_their_error(client: redis.Redis, keys: RedisKeys) -> None:
    buf = RedisReplayBuffer(client, capacity=100, name="run", keys=keys)
    queue = EvaluationQueue(client, model="dw4", keys=keys, max_attempts=2)
    queue.enqueue(dw4_job("run:r0:0", "run", 2, seed=0))
    w = worker(queue, Failing())
    w.run(max_jobs=2)
    assert w.stats.jobs_failed == 2
    status = queue.status("run:r0:0")
    assert status is not None and status.state is JobState.PARKED
    assert "SCF did not converge" in (status.error or "")
    assert queue.parked() == [("run:r0:0", status.error)]
    assert queue.backlog() == 0 and len(buf) == 0
    # a healthy job behind it is unaffected
    queue.enqueue(dw4_job("run:r0:1", "run", 2, seed=1))
    worker(queue, DoubleWell()).run(max_jobs=1)
    assert len(buf) == 2


def test_unreadable_job_is_parked_not_crashing_the_worker(client: redis.Redis, keys: RedisKeys) -> None:
    queue = EvaluationQueue(client, model="dw4", keys=keys)
    client.xadd(queue.stream, {"job": "bad:0", "payload": b"not a record"})
    client.set(keys.job_status("bad:0"), '{"state": "queued"}')
    w = worker(queue, DoubleWell())
    w.run(max_jobs=1)
    parked = queue.parked()
    assert len(parked) == 1 and "bad magic" in parked[0][1]


def test_results_for_a_missing_buffer_are_not_lost_silently(client: redis.Redis, keys: RedisKeys) -> None:
    queue = EvaluationQueue(client, model="dw4", keys=keys, max_attempts=1)
    queue.enqueue(dw4_job("run:r0:0", "nowhere", 2, seed=0))
    worker(queue, DoubleWell()).run(max_jobs=1)
    status = queue.status("run:r0:0")
    assert status is not None and status.state is JobState.PARKED and "no replay buffer" in (status.error or "")


def test_heartbeat_keeps_a_live_workers_job(client: redis.Redis, keys: RedisKeys) -> None:
    queue = EvaluationQueue(client, model="dw4", keys=keys)
    queue.enqueue(dw4_job("run:r0:0", "run", 1, seed=0))
    (job,) = queue.claim("alive", block_ms=10, reclaim_idle_ms=None)
    for _ in range(6):  # alive for 3x the idle timeout, touching every 50 ms
        time.sleep(0.05)
        queue.touch("alive", [job.message_id])
    assert queue.claim("thief", block_ms=10, reclaim_idle_ms=100) == []
    time.sleep(0.15)  # the heartbeat stops: the job is taken over
    assert len(queue.claim("thief", block_ms=10, reclaim_idle_ms=100)) == 1


def test_job_round_trip_and_version_mismatch_is_a_clear_error() -> None:
    job = dw4_job("a:b:1", "run", 2, seed=3)
    back = EvaluationJob.decode(job.encode())
    torch.testing.assert_close(back.structures.positions, job.structures.positions)
    assert back.adjoint == job.adjoint and back.job_id == job.job_id
    blob = bytearray(encode_record("replay-entry", {}, {}))
    struct.pack_into("<H", blob, 4, 99)
    with pytest.raises(RecordFormatError, match="format version 99"):
        decode_record(bytes(blob), "replay-entry")
    with pytest.raises(RecordFormatError, match="expected a 'evaluation-job' record"):
        EvaluationJob.decode(bytes(encode_record("replay-entry", {}, {})))
    with pytest.raises(TypeError, match="numeric"):
        encode_record("x", {}, {"o": __import__("numpy").array([object()])})
