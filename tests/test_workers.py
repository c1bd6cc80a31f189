"""The distributed shape as plain processes on localhost (what docker-compose runs): an embedded Redis,
energy workers and a training worker started through the CLI, killed with SIGKILL, restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import torch

from buffer.jobs import AdjointSpec, EvaluationJob, EvaluationQueue, JobState
from buffer.keys import RedisKeys
from buffer.published import latest_checkpoint
from buffer.redis import RedisReplayBuffer
from energy.protocol import Structures
from energy.synthetic import DoubleWell
from sampler.schedule import GeometricNoiseSchedule
from training.checkpoint import file_sha256, load_checkpoint
from training.energy_worker import EnergyWorker, EnergyWorkerConfig

pytestmark = pytest.mark.redis

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--samples-per-round", "16", "--initial-samples", "32", "--grad-steps", "3", "--batch-size", "16",
    "--hidden", "8", "--layers", "1", "--integration-steps", "10", "--job-size", "8", "--threads", "1",
]  # fmt: skip


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start ``adjoint-sampling ARGS`` as a process (log in tmp_path); all are killed at the end."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"{name}.log", "wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("REDIS_URL", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", *args], cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def dw4_jobs(buffer: str, count: int, size: int) -> list[EvaluationJob]:
    spec = AdjointSpec(tau=1.0, max_grad_norm=100.0, schedule=GeometricNoiseSchedule(sigma_max=2.0))
    g = torch.Generator().manual_seed(0)
    return [
        EvaluationJob(
            job_id=f"fault:r0:{k}",
            buffer=buffer,
            structures=Structures.uniform(2.0 * torch.randn(size, 4, 2, generator=g)),
            system_ids=torch.full((size,), k, dtype=torch.long),  # tags each entry with its job
            model_version=0,
            adjoint=spec,
        )
        for k in range(count)
    ]


@pytest.mark.slow
def test_sigkilled_energy_worker_loses_nothing_and_duplicates_nothing(
    client: redis.Redis, redis_url: str, prefix: str, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    keys = RedisKeys(prefix)
    buf = RedisReplayBuffer(client, capacity=1000, name="fault", keys=keys)
    queue = EvaluationQueue(client, model="dw4", keys=keys)
    jobs = dw4_jobs("fault", count=6, size=4)
    for job in jobs:
        assert queue.enqueue(job)
    # worker A: 0.5 s per structure, so it is surely inside a 4-structure batch when killed
    a = spawn(
        "worker-a", "worker", "energy", "--model", "dw4", "--consumer", "A", "--artificial-cost-ms", "500",
        "--reclaim-idle-s", "0.5", "--redis-url", redis_url, "--redis-prefix", prefix,
    )  # fmt: skip

    def a_is_evaluating() -> bool:
        return any(s is not None and s.consumer == "A" for s in queue.statuses([j.job_id for j in jobs]))

    wait_for(a_is_evaluating, 60, "worker A to claim a job")
    time.sleep(0.3)
    a.send_signal(signal.SIGKILL)
    a.wait()
    (pending,) = queue.pending()
    assert pending["consumer"] == b"A" and len(buf) == 0  # killed mid-batch: nothing committed
    killed_job = next(j.job_id for j in jobs if (s := queue.status(j.job_id)) and s.consumer == "A")

    survivor = EnergyWorker(queue, DoubleWell(), EnergyWorkerConfig(consumer="B", block_ms=50, reclaim_idle_ms=500))
    stats = survivor.run(max_jobs=len(jobs))
    assert stats.jobs_done == len(jobs) and stats.jobs_duplicate == 0

    entries = buf.entries()
    assert entries is not None and entries.num_graphs == 6 * 4  # nothing lost, nothing duplicated
    assert sorted(entries.system_ids.tolist()) == sorted([k for k in range(6) for _ in range(4)])
    parts = entries.split()
    for k, job in enumerate(jobs):
        mine = [p for p in parts if int(p.system_ids) == k]
        got = torch.stack([p.positions for p in mine])
        want = job.structures.positions.view(4, 4, 2)
        torch.testing.assert_close(got, want)  # each sample exactly once, in the job's order
        e_want = DoubleWell().energy(want)
        torch.testing.assert_close(torch.cat([p.energies for p in mine]), e_want)
    statuses = queue.statuses([j.job_id for j in jobs])
    assert all(s is not None and s.state is JobState.DONE for s in statuses)
    reclaimed = queue.status(killed_job)
    assert reclaimed is not None and reclaimed.attempts == 2 and reclaimed.consumer == "B"
    assert queue.pending() == [] and queue.backlog() == 0


@pytest.mark.slow
def test_killed_trainer_resumes_from_its_checkpoint_with_the_buffer_intact(
    client: redis.Redis, redis_url: str, prefix: str, tmp_path: Path, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    """docker-compose's topology as processes: Redis, an energy worker, a trainer (killed, restarted)."""
    common = ["--redis-url", redis_url, "--redis-prefix", prefix]
    spawn("energy-1", "worker", "energy", "--model", "dw4", "--threads", "1", *common)
    out = tmp_path / "dw4.pt"
    train = ["worker", "train", "--system", "dw4", "--run", "fresh", "--out", str(out), "--checkpoint-every", "2",
             *TINY, *common]  # fmt: skip
    first = spawn("trainer-1", *train, "--rounds", "1000")

    def checkpointed() -> bool:
        return out.exists() and load_checkpoint(out)["round"] >= 2

    wait_for(checkpointed, 90, "the first checkpoint")
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = load_checkpoint(out)
    c = before["round"]
    buf = RedisReplayBuffer(client, capacity=10_000, name="fresh", keys=RedisKeys(prefix))
    kept = buf.entries()
    assert kept is not None and kept.num_graphs >= 32 + c * 16

    second = spawn("trainer-2", *train, "--rounds", str(c + 2))
    assert second.wait(timeout=120) == 0, (tmp_path / "trainer-2.log").read_text()[-3000:]
    log = (tmp_path / "trainer-2.log").read_text()
    assert f"resumed at round {c}" in log and "intact in Redis" in log
    after = load_checkpoint(out)
    assert after["round"] == c + 2
    assert after["history"][:c] == before["history"]  # the resumed run continues the killed one
    entries = buf.entries()
    assert entries is not None
    # exactly once: the initial samples and 16 per round, although rounds c..c+1 may have been posted twice
    assert entries.num_graphs == 32 + (c + 2) * 16
    n = kept.num_nodes.sum()
    torch.testing.assert_close(entries.positions[:n], kept.positions)  # the old entries, untouched
    published = latest_checkpoint(client, "fresh", RedisKeys(prefix))
    assert published is not None and published.round == c + 2 and published.sha256 == file_sha256(out)


def test_stop_request_checkpoints_at_a_round_boundary(client: redis.Redis, prefix: str, tmp_path: Path) -> None:
    """In-process: SIGTERM's event stops the trainer between rounds with a checkpoint; a rerun resumes."""
    from cli.main import build_parser
    from cli.workers import _run_config
    from training.trainer_worker import TrainerWorkerConfig, run_trainer_worker

    args = build_parser().parse_args(["worker", "train", "--system", "dw4", "--out", "x", *TINY])
    run_config = _run_config(args)
    keys = RedisKeys(prefix)
    worker_stop = threading.Event()
    worker = EnergyWorker(
        EvaluationQueue(client, model="dw4", keys=keys),
        DoubleWell(),
        EnergyWorkerConfig(consumer="w", block_ms=20),
        stop=worker_stop,
    )
    worker_thread = threading.Thread(target=worker.run)
    worker_thread.start()
    stop = threading.Event()
    config = TrainerWorkerConfig(run="stopme", checkpoint_every=100, job_size=8)
    out = tmp_path / "stop.pt"

    def stop_after_two_rounds() -> None:
        buffer = RedisReplayBuffer(client, capacity=10_000, name="stopme", keys=keys)
        wait_for(lambda: len(buffer) >= 32 + 2 * 16, 30, "two rounds of samples")
        stop.set()

    threading.Thread(target=stop_after_two_rounds, daemon=True).start()
    try:
        trainer = run_trainer_worker(run_config, config, client=client, out=out, max_rounds=50, keys=keys, stop=stop)
        assert 2 <= trainer.round < 50
        saved = load_checkpoint(out)
        assert saved["round"] == trainer.round  # written on stop although checkpoint_every is 100
        resumed = run_trainer_worker(
            run_config, config, client=client, out=out, max_rounds=trainer.round + 1, keys=keys
        )
    finally:
        worker_stop.set()
        worker_thread.join()
    assert resumed.round == trainer.round + 1
    for a, b in zip(resumed.history[: trainer.round], trainer.history, strict=True):
        assert a == b


def test_a_fresh_run_refuses_another_runs_buffer(client: redis.Redis, prefix: str, tmp_path: Path) -> None:
    from cli.main import build_parser
    from cli.workers import _run_config
    from training.trainer_worker import TrainerWorkerConfig, run_trainer_worker

    keys = RedisKeys(prefix)
    args = build_parser().parse_args(["worker", "train", "--system", "dw4", "--out", "x", *TINY])
    buf = RedisReplayBuffer(client, capacity=100, name="taken", keys=keys)
    buf.bind_owner("someone-else")
    config = TrainerWorkerConfig(run="taken")
    with pytest.raises(ValueError, match="belongs to another run"):
        run_trainer_worker(_run_config(args), config, client=client, out=tmp_path / "a.pt", max_rounds=0, keys=keys)
    run_trainer_worker(
        _run_config(args), config, client=client, out=tmp_path / "a.pt", max_rounds=0, keys=keys, reset_buffer=True
    )
    assert buf.bind_owner("x") not in (None, "someone-else")


def test_lag_one_steps_while_the_newest_samples_are_evaluated(client: redis.Redis, prefix: str, tmp_path: Path) -> None:
    """``max_lag_rounds=1``: round 0's gradient steps need only the initial samples; with ``0`` they wait."""
    from cli.main import build_parser
    from cli.workers import _run_config
    from training.trainer_worker import TrainerWorkerConfig, run_trainer_worker

    keys = RedisKeys(prefix)
    run_config = _run_config(build_parser().parse_args(["worker", "train", "--system", "dw4", "--out", "x", *TINY]))
    queue = EvaluationQueue(client, model="dw4", keys=keys)
    worker = EnergyWorker(queue, DoubleWell(), EnergyWorkerConfig(consumer="w", block_ms=20))
    only_initial = threading.Thread(target=worker.run, kwargs={"max_jobs": 4})  # 32 initial samples / 8 per job
    only_initial.start()
    lagging = TrainerWorkerConfig(run="lag1", job_size=8, max_lag_rounds=1, wait_timeout_s=30)
    trainer = run_trainer_worker(run_config, lagging, client=client, out=tmp_path / "l.pt", max_rounds=1, keys=keys)
    only_initial.join()
    assert trainer.round == 1 and len(trainer.buffer) == 32  # stepped on the initial samples alone
    posted = [s for s in queue.statuses([f"lag1:{trainer_id(tmp_path / 'l.pt')}:r0:{k}" for k in range(2)])]
    assert all(s is not None and s.state is JobState.QUEUED for s in posted)  # round 0's samples still queued
    only_initial = threading.Thread(target=worker.run, kwargs={"max_jobs": 4})
    only_initial.start()
    in_step = TrainerWorkerConfig(run="lag0", job_size=8, max_lag_rounds=0, wait_timeout_s=1.0)
    with pytest.raises(TimeoutError, match=r"2 evaluation job.* unfinished"):  # waits for round 0's 16 samples
        run_trainer_worker(run_config, in_step, client=client, out=tmp_path / "z.pt", max_rounds=1, keys=keys)
    only_initial.join()


def trainer_id(out: Path) -> str:
    return str(load_checkpoint(out)["extra"]["identity"])
