"""The Cartesian conformer model trained through Redis with real processes: a `worker train --config conformers`
trainer and a `worker energy --model mmff` worker on a few small molecules. Every valid sample lands in the buffer
exactly once (counted by sample id); a SIGTERMed trainer finishes its round, checkpoints (kind ``conformers``, as
``train-conformers``), publishes, and resumes with the buffer intact. Also: the energy worker's target equals the
in-process trainer's on the same samples."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.test_torsional_worker import _cli, _until
from training.paths import DEFAULT_DATA

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(not (DEFAULT_DATA / "spice").is_dir(), reason="needs ../shared/data"),
]


def tiny_config() -> Any:
    from benchmarks.service_load import tiny_conformer_config

    return dataclasses.replace(tiny_conformer_config(), max_rounds=50)


class _Capture:
    """Stands in for the queue: keeps what the trainer posts."""

    stream = "capture"
    model = "mmff"

    def __init__(self) -> None:
        self.jobs: list[Any] = []

    def enqueue(self, job: Any) -> bool:
        self.jobs.append(job)
        return True


def test_worker_target_equals_the_in_process_trainer() -> None:
    from buffer.codec import decode_record, decode_replay_entries
    from buffer.jobs import EvaluationJob
    from sampler.loss import adjoint_target
    from training.conformer_training import build_conformer_trainer, training_systems
    from training.energy_worker import evaluate_job_entries
    from training.trainer_worker import RedisAlternation, TrainerWorkerConfig

    torch.set_num_threads(1)
    config = tiny_config()
    systems = training_systems(config, DEFAULT_DATA, 0)
    trainer = build_conformer_trainer(config, systems, 0)
    state = trainer.generator.get_state()
    x1 = trainer.sample(4).to("cpu")  # what RAM round 0 draws in process
    evaluation = trainer.target(x1)
    expected = adjoint_target(
        x1, evaluation.energy_gradient, schedule=trainer.schedule, tau=config.trainer.tau,
        max_grad_norm=config.trainer.max_grad_norm,
    )  # fmt: skip

    trainer.generator.set_state(state)
    queue = _Capture()
    worker = TrainerWorkerConfig(run="c", job_size=3)
    alternation = RedisAlternation(trainer, queue, trainer.target.structures, worker, job_prefix="c:x")  # type: ignore[arg-type,attr-defined]
    assert alternation.enqueue("r0", 4, controlled=True) == ["c:x:r0:0", "c:x:r0:1"]  # 4 samples in jobs of 3
    entries: list[bytes] = []
    for job in queue.jobs:
        job = EvaluationJob.decode(job.encode())  # what crosses Redis: positions, elements and mol blocks
        assert job.structures.connection_tables is not None
        blobs, status = evaluate_job_entries(trainer.target.model, job)  # type: ignore[attr-defined]
        assert status.evaluated == job.structures.num_structures
        entries += blobs
    assert bool(evaluation.valid.all()) and len(entries) == 4
    assert [decode_record(b, "replay-entry").meta["sample_id"] for b in entries] == [
        "c:x:r0:0:0", "c:x:r0:0:1", "c:x:r0:0:2", "c:x:r0:1:0",
    ]  # fmt: skip
    got = decode_replay_entries(entries)
    torch.testing.assert_close(got.system_ids, x1.system_ids)
    torch.testing.assert_close(got.positions, x1.positions)
    torch.testing.assert_close(got.energies, evaluation.energies)
    torch.testing.assert_close(got.adjoint, expected)


class _StopAfter(threading.Event):
    """A stop request that arrives after ``calls`` questions (e.g. between two warm-up chunks)."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls = calls

    def is_set(self) -> bool:
        self.calls -= 1
        return self.calls < 0 or super().is_set()


def test_warm_up_stops_between_chunks_and_resumes_exactly(client: Any, tmp_path: Path) -> None:
    from buffer.keys import RedisKeys
    from training.checkpoint import load_checkpoint
    from training.conformer_worker import run_conformer_worker
    from training.trainer_worker import TrainerWorkerConfig

    torch.set_num_threads(1)
    config = dataclasses.replace(tiny_config(), warmup_steps=100)  # two chunks of 50
    keys = RedisKeys("conformer-warm-up")

    def run(name: str, stop: threading.Event | None = None) -> dict[str, Any]:
        out = tmp_path / f"{name}.pt"
        worker = TrainerWorkerConfig(run=name, checkpoint_every=100)
        run_conformer_worker(
            config, worker, client=client, out=out, data_dir=DEFAULT_DATA, cache_dir=tmp_path / "cache",
            max_rounds=0, keys=keys, stop=stop,
        )  # fmt: skip
        return load_checkpoint(out)

    whole = run("whole")
    assert whole["extra"]["warmup_steps_done"] == 100 and whole["round"] == 0
    stopped = run("parts", _StopAfter(1))
    assert stopped["extra"]["warmup_steps_done"] == 50 and len(stopped["extra"]["warmup_loss"]) == 1
    resumed = run("parts")
    assert resumed["extra"]["warmup_steps_done"] == 100 and len(resumed["extra"]["warmup_loss"]) == 2
    for name, value in whole["control"].items():
        torch.testing.assert_close(resumed["control"][name], value, rtol=0, atol=0)


def _entries_by_job(client: Any, keys: Any, run: str) -> Counter[str]:
    """How many entries of each sample id the run's buffer holds."""
    from buffer.codec import decode_record

    blobs = client.hvals(keys.buffer_entries(run))
    return Counter(decode_record(b, "replay-entry").meta["sample_id"] for b in blobs)


def _job_ids(rounds: int, *, prefix: str, initial: int, per_round: int, job_size: int) -> list[str]:
    def jobs(tag: str, count: int) -> list[str]:
        return [f"{prefix}:{tag}:{k}" for k in range((count + job_size - 1) // job_size)]

    return jobs("init", initial) + [j for r in range(rounds) for j in jobs(f"r{r}", per_round)]


def test_trainer_and_energy_worker_exactly_once_stop_and_resume(redis_url: str, tmp_path: Path) -> None:
    from buffer.connection import RedisSettings, connect
    from buffer.jobs import EvaluationQueue
    from buffer.keys import RedisKeys
    from buffer.published import latest_checkpoint
    from inference.loading import load_sampler
    from training.checkpoint import file_sha256, load_checkpoint
    from training.conformer_training import CHECKPOINT_KIND, ConformerRunConfig
    from training.energy_worker import energy_stream_name

    prefix, run = "conformer-worker", "cartesian"
    keys = RedisKeys(prefix)
    client = connect(RedisSettings(url=redis_url))
    config = tiny_config()
    config_file = tmp_path / "run.json"
    config_file.write_text(json.dumps(config.to_dict()))
    out = tmp_path / "conformers.pt"
    redis_args = ["--redis-url", redis_url, "--redis-prefix", prefix, "--threads", "1"]
    train_args = [
        "worker", "train", "--config", "conformers", "--config-file", str(config_file), "--run", run,
        "--out", str(out), "--job-size", "2", "--checkpoint-every", "1", "--wait-timeout", "60",
        "--cache-dir", str(tmp_path / "cache"), *redis_args,
    ]  # fmt: skip
    logs = [tmp_path / "trainer.log", tmp_path / "energy.log"]
    energy = _cli(
        "worker", "energy", "--model", "mmff", "--consumer", "energy-0", "--artificial-cost-ms", "50", *redis_args,
        log=logs[1],
    )  # fmt: skip
    trainer = _cli(*train_args, log=logs[0])

    def published_round() -> int:
        info = latest_checkpoint(client, run, keys)
        return -1 if info is None else info.round

    def check_buffer(rounds: int, identity: str) -> set[str]:
        """Every valid sample of every finished round's jobs in the buffer once, nothing else."""
        job_ids = _job_ids(
            rounds, prefix=f"{run}:{identity}", initial=config.trainer.initial_samples,
            per_round=config.trainer.samples_per_round, job_size=2,
        )  # fmt: skip
        statuses = EvaluationQueue(client, model=energy_stream_name("mmff"), keys=keys).statuses(job_ids)
        ids = _entries_by_job(client, keys, run)
        assert max(ids.values()) == 1  # no sample twice
        for job_id, status in zip(job_ids, statuses, strict=True):
            assert status is not None and status.state == "done", job_id
            landed = {i for i in ids if i.rsplit(":", 1)[0] == job_id}
            assert len(landed) == status.valid and status.evaluated == 2, job_id
        return set(ids)

    try:
        _until(lambda: published_round() >= 2, "two published rounds", 60, logs)
        trainer.send_signal(signal.SIGTERM)
        assert trainer.wait(60) == 0, logs[0].read_text()[-3000:]
        stopped = load_checkpoint(out)
        assert stopped["kind"] == CHECKPOINT_KIND and stopped["round"] >= 2
        assert ConformerRunConfig.from_dict(stopped["config"]) == config  # train-conformers' config, whole
        info = latest_checkpoint(client, run, keys)
        assert info is not None and info.round == stopped["round"] and info.sha256 == file_sha256(out)
        assert load_sampler(out).provenance.training_round == stopped["round"]  # what `serve --watch-run` loads
        identity = stopped["extra"]["identity"]
        before = check_buffer(stopped["round"], identity)

        # resume: the same command with a higher budget continues from the checkpoint, on the same buffer
        final = stopped["round"] + 2
        resumed = _cli(*train_args, "--rounds", str(final), log=logs[0])
        assert resumed.wait(60) == 0, logs[0].read_text()[-3000:]
        payload = load_checkpoint(out)
        assert payload["round"] == final and payload["extra"]["identity"] == identity
        assert payload["energy_calls"] == config.trainer.initial_samples + final * config.trainer.samples_per_round
        assert published_round() == final
        assert before <= check_buffer(final, identity)  # the buffer is intact, and grew by the new rounds only
        assert f"resumed {out} at round {stopped['round']}" in logs[0].read_text()
    finally:
        for p in (trainer, energy):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in (trainer, energy):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
