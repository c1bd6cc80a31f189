"""Data-parallel training of the torsional conformer model on CPU with gloo and 2 processes (the path ``torchrun
--nproc-per-node 2 -m cli.main worker train --config torsional`` takes).

1. The known answer: each rank takes RAM steps (:meth:`TorsionalTrainer.ram_step`, gradients averaged across
   ranks) on its own draws from the same buffer; one process stepping on both ranks' draws together (the mean of
   the two batches' losses, which is the loss of the concatenated batch: every sample has the same number of
   torsions) reaches the same parameters, and the parameters moved.
2. The Redis trainer under DDP: both ranks hold bit-identical parameters after every checkpoint; each rank posts
   its own share of every round (job ids tagged ``pRANK``), every sample lands in the buffer exactly once; rank 0
   checkpoints with every rank's generator, and a second call resumes from it.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from tests.helpers import free_port, torchrun_env
from training.paths import DEFAULT_DATA

pytestmark = [
    pytest.mark.slow,
    pytest.mark.redis,
    pytest.mark.skipif(not (DEFAULT_DATA / "spice").is_dir(), reason="needs ../shared/data"),
]

WORLD = 2
STEPS = 3
SPAWN_TIMEOUT_S = 240.0


def tiny_config() -> Any:
    from tests.test_torsional_training import tiny_config as base

    config: Any = base()
    return dataclasses.replace(
        config, num_molecules=3, molecules_per_round=2, copies=2, gradient_steps=2, batch_size=4, max_rounds=50
    )


def known_answer_trainer() -> Any:
    """A tiny trainer at its initial weights, its in-memory buffer holding 6 evaluated samples of the first
    molecule's seeds (the same number of torsions each), drawn and evaluated identically in every process."""
    from energy.registry import build_energy_model
    from training.torsional_training import TorsionalTrainer, build_molecules

    config = dataclasses.replace(tiny_config(), warmup_steps=0)
    molecules, _ = build_molecules(config, DEFAULT_DATA, seed=0, show_progress=False)
    trainer = TorsionalTrainer(config, molecules, build_energy_model("mmff"), seed=0)
    seeds = [s.system_id for s in molecules[0].systems]
    batch, phi = trainer.sample([seeds[k % len(seeds)] for k in range(6)])
    samples = trainer.evaluate(batch, phi)
    assert samples.num_samples == 6 and len(set(samples.num_torsions.tolist())) == 1
    trainer.buffer.push(samples.to_replay())
    return trainer


def rank_generator(rank: int) -> torch.Generator:
    return torch.Generator().manual_seed(1000 + rank)


def _known_answer(rank: int, out: Path) -> None:
    from training.distributed import install_gradient_averaging

    trainer = known_answer_trainer()
    trainer.generator = rank_generator(rank)
    install_gradient_averaging(trainer.network)
    for _ in range(STEPS):
        trainer.ram_step()
    torch.save(trainer.network.state_dict(), out / f"known{rank}.pt")


def _redis_trainer(ctx: Any, url: str, prefix: str, out: Path) -> None:
    from buffer.connection import RedisSettings, connect
    from buffer.keys import RedisKeys
    from training.distributed import parameter_digest
    from training.torsional_worker import run_torsional_worker
    from training.trainer_worker import TrainerWorkerConfig

    client = connect(RedisSettings(url=url))
    worker = TrainerWorkerConfig(run="ddp", job_size=1, checkpoint_every=1, wait_timeout_s=60)
    for phase, rounds in (("first", 2), ("resumed", 3)):
        trainer = run_torsional_worker(
            tiny_config(),
            worker,
            client=client,
            out=out / "ddp.pt",
            data_dir=DEFAULT_DATA,
            max_rounds=rounds,
            keys=RedisKeys(prefix),
            ctx=ctx,
        )
        (out / f"digest-{phase}-{ctx.rank}.txt").write_text(parameter_digest(trainer.network))


def _rank(rank: int, port: int, url: str, prefix: str, out: str) -> None:
    """One process of the group, as torchrun would start it; runs both scenarios (one spawn is cheaper)."""
    from training.distributed import DistributedContext, process_group

    torch.set_num_threads(1)
    torchrun_env(rank, port, WORLD)
    ctx = DistributedContext.from_env()
    with process_group(ctx, backend="gloo"):
        _known_answer(rank, Path(out))
        _redis_trainer(ctx, url, prefix, Path(out))


def _spawn(args: tuple[Any, ...]) -> None:
    """``mp.spawn`` with a deadline (a collective that never completes must fail the test, not hang it)."""
    context = mp.start_processes(_rank, args=args, nprocs=WORLD, join=False, start_method="spawn")
    assert context is not None
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for p in context.processes:
                p.kill()
            raise AssertionError(f"the {WORLD} ranks did not finish within {SPAWN_TIMEOUT_S:.0f} s")


@pytest.fixture(scope="module")
def ddp_run(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, Any]]:
    """Two gloo ranks against a real Redis, an energy worker (a thread here) serving MMFF94."""
    from buffer.connection import RedisSettings, connect
    from buffer.jobs import EvaluationQueue
    from buffer.keys import RedisKeys
    from energy.registry import build_energy_model
    from training.energy_worker import EnergyWorker, EnergyWorkerConfig
    from training.torsional_worker import energy_stream_name

    torch.set_num_threads(1)
    out = Path(tmp_path_factory.mktemp("torsional-ddp"))
    prefix = f"t{uuid.uuid4().hex[:12]}"
    queue = EvaluationQueue(
        connect(RedisSettings(url=redis_url)), model=energy_stream_name("mmff"), keys=RedisKeys(prefix)
    )
    stop = threading.Event()
    worker = EnergyWorker(queue, build_energy_model("mmff"), EnergyWorkerConfig(consumer="w", block_ms=20), stop=stop)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        _spawn((free_port(), redis_url, prefix, str(out)))
    finally:
        stop.set()
        thread.join()
    yield out, prefix, worker


def test_gradient_averaging_equals_one_process_on_both_batches(ddp_run: tuple[Path, str, Any]) -> None:
    out, _, _ = ddp_run
    ranks = [torch.load(out / f"known{r}.pt") for r in range(WORLD)]
    trainer = known_answer_trainer()
    initial = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    generators = [rank_generator(r) for r in range(WORLD)]
    for _ in range(STEPS):  # one process: both ranks' draws, the loss of the two batches together
        losses = []
        for g in generators:
            trainer.generator = g
            losses.append(trainer.ram_loss())
        trainer._step(torch.stack(losses).mean())
    final = trainer.network.state_dict()
    for name, value in final.items():
        assert torch.equal(ranks[0][name], ranks[1][name]), f"{name} differs between ranks"
        torch.testing.assert_close(ranks[0][name], value, rtol=1e-5, atol=1e-6)
    moved = [k for k in initial if not torch.equal(initial[k], final[k])]
    assert len(moved) == len(initial), f"parameters that did not move: {sorted(set(initial) - set(moved))}"


def test_redis_trainer_under_ddp_keeps_ranks_identical_and_resumes(
    ddp_run: tuple[Path, str, Any], redis_url: str
) -> None:
    from buffer.codec import decode_record
    from buffer.connection import RedisSettings, connect
    from buffer.keys import RedisKeys
    from buffer.published import latest_checkpoint
    from training.checkpoint import file_sha256, load_checkpoint
    from training.torsional_training import CHECKPOINT_KIND, TorsionalTrainer, build_molecules

    out, prefix, worker = ddp_run
    for phase in ("first", "resumed"):
        digests = {(out / f"digest-{phase}-{r}.txt").read_text() for r in range(WORLD)}
        assert len(digests) == 1, f"ranks differ after the {phase} call"
    saved = load_checkpoint(out / "ddp.pt")
    assert saved["kind"] == CHECKPOINT_KIND and saved["round"] == 3
    extra = saved["extra"]
    assert extra["world_size"] == WORLD and len(extra["rank_generators"]) == WORLD
    assert not torch.equal(extra["rank_generators"][0], extra["rank_generators"][1])
    assert saved["energy_calls"] == 3 * 4  # 2 molecules x 2 copies a round, over both ranks
    keys = RedisKeys(prefix)
    client = connect(RedisSettings(url=redis_url))
    info = latest_checkpoint(client, "ddp", keys)
    assert info is not None and info.round == 3 and info.sha256 == file_sha256(out / "ddp.pt")

    # each rank posted its own molecule x 2 copies per round, as jobs of one sample: all landed, once
    blobs: list[bytes] = client.hvals(keys.buffer_entries("ddp"))  # type: ignore[assignment]
    ids = Counter(decode_record(b, "replay-entry").meta["sample_id"] for b in blobs)
    expected = {f"ddp:{extra['identity']}:r{r}:p{p}:{k}:0" for r in range(3) for p in range(WORLD) for k in range(2)}
    assert set(ids) == expected and max(ids.values()) == 1
    assert worker.stats.structures == len(expected) and worker.stats.jobs_duplicate == 0

    # the parameters moved from their initial values (which depend on the configuration and the seed alone)
    config = dataclasses.replace(tiny_config(), warmup_steps=0)
    molecules, _ = build_molecules(config, DEFAULT_DATA, seed=0, show_progress=False)
    initial = TorsionalTrainer(config, molecules, None, seed=0).network.state_dict()  # type: ignore[arg-type]
    assert all(not torch.equal(initial[k], v) for k, v in saved["control"].items())
