"""``adjoint-sampling serve`` and ``adjoint-sampling worker sample`` as real processes, and the job queue's
recovery from a worker that died mid-job."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli.main import main

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[1]


def test_serve_without_checkpoint_says_how_to_get_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "missing.pt") in err and "adjoint-sampling train-conformers --out" in err


def test_serve_refuses_an_energy_model_it_does_not_know(
    tiny_conformer_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--checkpoint", str(tiny_conformer_checkpoint), "--energy-model", "dft"]) == 2
    assert "unknown energy models ['dft']" in capsys.readouterr().err


@pytest.fixture(scope="module")
def served(tiny_conformer_checkpoint: Path, redis_url: str) -> Iterator[tuple[str, list[str]]]:
    """``adjoint-sampling serve`` in a subprocess (port 0), without in-process workers; yields URL and output.
    One server for the module's tests (each start pays the torch import): none of them changes what it serves."""
    argv = [
        sys.executable, "-m", "cli.main", "serve", "--port", "0", "--checkpoint", str(tiny_conformer_checkpoint),
        "--redis-url", redis_url, "--redis-prefix", "cli", "--energy-model", "mmff", "--threads", "1",
        "--inprocess-workers", "0",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.strip().startswith("curl "):  # printed right after "service ready at URL"
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(120), "".join(lines)
        url = re.search(r"service ready at (\S+)", "".join(lines))
        assert url is not None
        yield url.group(1), lines
    finally:
        proc.terminate()
        proc.wait(30)


def test_serve_prints_a_request_that_works(served: tuple[str, list[str]]) -> None:
    url, lines = served
    curl = next(line.strip() for line in lines if line.strip().startswith("curl "))
    words = shlex.split(curl)
    assert words[2] == f"{url}/v1/conformers"
    body = json.loads(words[words.index("-d") + 1])
    answer = httpx.post(words[2], json=body, timeout=60)  # what the printed curl sends
    assert answer.status_code == 200 and answer.json()["checks"]["requested"] == body["num_conformers"]


def test_worker_sample_process_finishes_queued_jobs(
    served: tuple[str, list[str]], tiny_conformer_checkpoint: Path, redis_url: str
) -> None:
    url, _ = served
    job = httpx.post(f"{url}/v1/jobs", json={"smiles": ["CCO", "N#N"], "num_conformers": 4}, timeout=30).json()
    worker = subprocess.run(
        [
            sys.executable, "-m", "cli.main", "worker", "sample", "--checkpoint", str(tiny_conformer_checkpoint),
            "--redis-url", redis_url, "--redis-prefix", "cli", "--energy-model", "mmff", "--max-jobs", "1",
            "--exit-when-idle", "30",
        ],
        capture_output=True, text=True, timeout=180, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert worker.returncode == 0, worker.stdout + worker.stderr
    assert "finished 1 jobs" in worker.stdout
    status = httpx.get(f"{url}/v1/jobs/{job['id']}", timeout=30).json()
    assert status["status"] == "done" and status["progress"]["finished"] == 2


def test_a_job_whose_worker_died_is_taken_over_without_repeating_molecules(
    tiny_conformer_checkpoint: Path, redis_url: str
) -> None:
    import asyncio

    import redis.asyncio as aioredis

    from buffer.connection import RedisSettings, connect
    from buffer.keys import RedisKeys
    from service.engine import SamplingEngine
    from service.jobs import AsyncJobStore, JobQueue
    from service.sampling_worker import SamplingWorker, WorkerConfig
    from service.schemas import JobRequest, JobState, MoleculeResult
    from service.settings import ServiceSettings

    keys = RedisKeys("takeover")
    request = JobRequest(smiles=["CCO", "CCN", "CCC"], num_conformers=2)

    async def submit() -> str:
        client = aioredis.Redis.from_url(redis_url)
        status = await AsyncJobStore(client, keys, max_queue=10, job_ttl_s=60).submit(request)
        await client.aclose()
        return status.id

    job_id = asyncio.run(submit())
    queue = JobQueue(connect(RedisSettings(url=redis_url)), keys, max_attempts=3, result_ttl_s=60, job_ttl_s=60)
    claimed = queue.claim("doomed", block_ms=100, reclaim_idle_ms=60_000)
    assert claimed is not None and claimed.job_id == job_id
    queue.start(claimed, "doomed")
    queue.store(claimed, MoleculeResult(index=0, smiles="CCO", error="stored before the crash"))
    # "doomed" dies here: no heartbeat, no finish. Another worker takes the job over once it is idle.
    assert queue.claim("survivor", block_ms=10, reclaim_idle_ms=60_000) is None  # too early
    time.sleep(0.3)
    settings = ServiceSettings(checkpoint=tiny_conformer_checkpoint, energy_model="mmff", energy_models=("mmff",))
    engine = SamplingEngine.load(settings)
    try:
        worker = SamplingWorker(queue, engine, WorkerConfig(consumer="survivor", block_ms=100, reclaim_idle_ms=200))
        assert worker.run(max_jobs=1, exit_when_idle_s=10) == 1
    finally:
        engine.close()
    record = {k.decode(): v.decode() for k, v in queue.client.hgetall(keys.sampling_job(job_id)).items()}  # type: ignore[union-attr]
    assert record["state"] == JobState.DONE.value and record["attempts"] == "2" and record["finished"] == "3"
    results = queue.client.hgetall(keys.sampling_results(job_id))
    first = MoleculeResult.model_validate_json(results[b"0"])  # type: ignore[index]
    assert first.error == "stored before the crash"  # kept, not sampled again
    assert queue.depth() == 0
