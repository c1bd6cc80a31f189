"""The torsional conformer model trained through Redis with real processes: a `worker train --config torsional`
trainer and two `worker energy --model mmff` workers on a few small molecules. A SIGKILLed energy worker loses
and duplicates no sample (counted by sample id in the buffer); a SIGTERMed trainer finishes its round,
checkpoints, publishes, and resumes with the buffer intact. Also: the energy worker's target equals the
in-process trainer's on the same samples."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from training.paths import DEFAULT_DATA

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(not (DEFAULT_DATA / "spice").is_dir(), reason="needs ../shared/data"),
]

ROOT = Path(__file__).resolve().parents[1]


def tiny_config() -> Any:
    import dataclasses

    from tests.test_torsional_training import tiny_config as base

    config: Any = base()
    return dataclasses.replace(config, num_molecules=3, molecules_per_round=2, copies=2, max_rounds=50)


class _Capture:
    """Stands in for the queue: keeps what the trainer posts."""

    stream = "capture"

    def __init__(self) -> None:
        self.jobs: list[Any] = []

    def enqueue(self, job: Any) -> bool:
        self.jobs.append(job)
        return True


@pytest.mark.parametrize("relax_iterations", [0, 100])
def test_worker_target_equals_the_in_process_trainer(tmp_path: Path, relax_iterations: int) -> None:
    """Rigid and relaxed targets alike (the relaxed one minimizes MMFF94 in the worker, with the dihedrals held)."""
    from buffer.codec import decode_record, decode_replay_entries
    from buffer.torsion_jobs import TorsionEvaluationJob
    from energy.registry import build_energy_model
    from sampler.torsion_replay import TorsionSamples
    from training.torsion_evaluation import evaluate_torsion_job
    from training.torsional_training import TorsionalTrainer, build_molecules
    from training.torsional_worker import TorsionalRedisRounds
    from training.trainer_worker import TrainerWorkerConfig

    torch.set_num_threads(1)
    config = dataclasses.replace(tiny_config(), relax_iterations=relax_iterations)  # type: ignore[type-var]
    molecules, _ = build_molecules(config, DEFAULT_DATA, seed=0, show_progress=False)
    energy = build_energy_model("mmff")
    trainer = TorsionalTrainer(config, molecules, energy, seed=0)
    state = trainer.generator.get_state()
    drawn = torch.randint(len(trainer.systems), (config.molecules_per_round,), generator=trainer.generator)
    batch, phi = trainer.sample(drawn.repeat_interleave(config.copies).tolist())
    expected = trainer.evaluate(batch, phi)

    trainer.generator.set_state(state)
    queue = _Capture()
    rounds = TorsionalRedisRounds(trainer, queue, TrainerWorkerConfig(run="t", job_size=3), job_prefix="t:x")  # type: ignore[arg-type]
    rounds.enqueue()
    assert [j.job_id for j in queue.jobs] == ["t:x:r0:0", "t:x:r0:1"]  # 4 samples in jobs of 3
    entries: list[bytes] = []
    for job in queue.jobs:
        job = TorsionEvaluationJob.decode(job.encode())  # what crosses Redis
        blobs, status = evaluate_torsion_job(energy, job)
        assert status.valid == status.evaluated == job.structures.num_structures
        entries += blobs
    got = TorsionSamples.from_replay(decode_replay_entries(entries))
    assert [decode_record(b, "replay-entry").meta["sample_id"] for b in entries] == [
        "t:x:r0:0:0",
        "t:x:r0:0:1",
        "t:x:r0:0:2",
        "t:x:r0:1:0",
    ]
    torch.testing.assert_close(got.system_ids, expected.system_ids)
    torch.testing.assert_close(got.phi, expected.phi)
    torch.testing.assert_close(got.energies, expected.energies, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.adjoint, expected.adjoint, rtol=1e-4, atol=1e-4)


# -- real processes -------------------------------------------------------------------------------------------
def _cli(*args: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _until(condition: Callable[[], bool], what: str, timeout_s: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs if p.exists())
            raise AssertionError(f"timed out waiting for {what}\n{tails}")
        time.sleep(0.1)


def _sample_ids(client: Any, keys: Any, run: str) -> Counter[str]:
    from buffer.codec import decode_record

    blobs = client.hvals(keys.buffer_entries(run))
    return Counter(decode_record(b, "replay-entry").meta["sample_id"] for b in blobs)


def _expected_ids(rounds: int, *, samples: int, job_size: int, prefix: str) -> set[str]:
    jobs = range((samples + job_size - 1) // job_size)
    return {
        f"{prefix}:r{r}:{k}:{i}"
        for r in range(rounds)
        for k in jobs
        for i in range(min(job_size, samples - k * job_size))
    }


def test_trainer_and_energy_workers_exactly_once_kill_and_resume(redis_url: str, tmp_path: Path) -> None:
    from buffer.connection import RedisSettings, connect
    from buffer.jobs import EvaluationQueue
    from buffer.keys import RedisKeys
    from buffer.published import latest_checkpoint
    from inference.loading import load_sampler
    from training.checkpoint import file_sha256, load_checkpoint
    from training.torsional_training import CHECKPOINT_KIND, config_to_dict
    from training.torsional_worker import energy_stream_name

    prefix, run = "torsional-worker", "conformers"
    keys = RedisKeys(prefix)
    client = connect(RedisSettings(url=redis_url))
    config_file = tmp_path / "run.json"
    config_file.write_text(json.dumps(config_to_dict(tiny_config())))
    out = tmp_path / "torsional.pt"
    redis_args = ["--redis-url", redis_url, "--redis-prefix", prefix, "--threads", "1"]
    train_args = [
        "worker", "train", "--config", "torsional", "--config-file", str(config_file), "--run", run,
        "--out", str(out), "--job-size", "1", "--checkpoint-every", "1", "--wait-timeout", "60", *redis_args,
    ]  # fmt: skip
    logs = [tmp_path / "trainer.log", tmp_path / "energy-0.log", tmp_path / "energy-1.log"]

    def energy_worker(k: int) -> subprocess.Popen[bytes]:
        return _cli(
            "worker", "energy", "--model", "mmff", "--consumer", f"energy-{k}", "--reclaim-idle-s", "1",
            "--artificial-cost-ms", "150", *redis_args, log=logs[1 + k],
        )  # fmt: skip

    def published_round() -> int:
        info = latest_checkpoint(client, run, keys)
        return -1 if info is None else info.round

    queue = EvaluationQueue(client, model=energy_stream_name("mmff"), keys=keys)
    workers = [energy_worker(0), energy_worker(1)]
    trainer = _cli(*train_args, log=logs[0])
    try:
        # SIGKILL worker 0 while it holds a job (claimed, not acknowledged)
        _until(lambda: any(p["consumer"] == b"energy-0" for p in queue.pending()), "energy-0 to hold a job", 90, logs)
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(10)
        _until(lambda: published_round() >= 3, "three published rounds", 90, logs)
        trainer.send_signal(signal.SIGTERM)
        assert trainer.wait(60) == 0, logs[0].read_text()[-3000:]
        stopped = load_checkpoint(out)
        assert stopped["kind"] == CHECKPOINT_KIND and stopped["round"] >= 3
        info = latest_checkpoint(client, run, keys)
        assert info is not None and info.round == stopped["round"] and info.sha256 == file_sha256(out)
        assert load_sampler(out).provenance.training_round == stopped["round"]  # what `serve --watch-run` loads
        ids = _sample_ids(client, keys, run)
        identity = stopped["extra"]["identity"]
        expected = _expected_ids(stopped["round"], samples=4, job_size=1, prefix=f"{run}:{identity}")
        assert max(ids.values()) == 1  # no sample twice, though energy-0 died holding one
        assert expected <= set(ids)  # every sample of every finished round landed
        before = set(ids)

        # resume: the same command with a higher budget continues from the checkpoint, on the same buffer
        final = stopped["round"] + 2
        resumed = _cli(*train_args, "--rounds", str(final), log=logs[0])
        assert resumed.wait(90) == 0, logs[0].read_text()[-3000:]
        payload = load_checkpoint(out)
        assert payload["round"] == final and payload["extra"]["identity"] == identity
        assert published_round() == final
        ids = _sample_ids(client, keys, run)
        assert max(ids.values()) == 1 and before <= set(ids)  # the buffer is intact
        assert _expected_ids(final, samples=4, job_size=1, prefix=f"{run}:{identity}") <= set(ids)
        assert "resumed" in logs[0].read_text()
    finally:
        for p in [trainer, *workers]:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in [trainer, *workers]:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_a_sample_that_cannot_be_relaxed_is_judged_by_the_energy_model_alone(tmp_path: Path) -> None:
    """A NaN sample in a relaxed-target job is invalid (with the energy model's reason); the others are relaxed."""
    from rdkit import Chem

    from energy.mmff import MmffEnergy
    from molecules.smiles import mol_from_smiles
    from molecules.torsions import embed_seeds, torsion_system
    from sampler.torsion_geometry import collate_torsion_systems, torsion_positions
    from training.torsion_evaluation import relax_at_torsions

    mol = mol_from_smiles("CCCCO")
    system = torsion_system(mol, embed_seeds(mol, 1, seed=2, mmff_relax=True)[0])
    batch = collate_torsion_systems([system, system])
    phi = torch.rand(batch.torsion_atoms.shape[0], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = torsion_positions(batch, 6.0 * phi - 3.0)  # turned away from the seed's minimum
    x[0, 0] = float("nan")
    out = relax_at_torsions([mol, mol], batch, x, max_iters=50)
    n = mol.GetNumAtoms()
    assert bool(torch.isnan(out[:n]).any()) and bool(torch.isfinite(out[n:]).all())
    assert not torch.allclose(out[n:], x[n:])  # the good sample was relaxed
    energy = MmffEnergy()
    from energy.protocol import Structures

    block = Chem.MolToMolBlock(mol)
    structures = Structures(
        positions=out,
        num_atoms=torch.tensor([n, n]),
        atomic_numbers=torch.tensor([a.GetAtomicNum() for a in mol.GetAtoms()] * 2),
        total_charge=torch.tensor([0, 0]),
        multiplicity=torch.tensor([1, 1]),
        connection_tables=(block, block),
    )
    result = energy.evaluate(structures)
    assert result.valid.tolist() == [False, True]
