"""Data-parallel training on CPU with gloo and 2 processes (the path ``torchrun`` takes): parameters stay
identical across ranks and equal a single process stepping on the concatenated batch."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from buffer.connection import RedisSettings, connect
from buffer.jobs import EvaluationQueue
from buffer.keys import RedisKeys
from buffer.redis_server import EmbeddedRedis, EmbeddedRedisConfig
from energy.synthetic import DoubleWell
from sampler.egnn import EGNNConfig, EGNNControl
from sampler.state import SystemBatch, SystemGraph, collate
from tests.helpers import free_port, torchrun_env
from training.checkpoint import load_checkpoint
from training.distributed import (
    DistributedContext,
    install_gradient_averaging,
    parameter_digest,
    process_group,
)
from training.energy_worker import EnergyWorker, EnergyWorkerConfig

WORLD = 2
STEPS = 3


def problem() -> tuple[nn.Module, torch.Tensor, SystemBatch, torch.Tensor]:
    """A control network and a fixed regression batch of 8 DW-4-sized graphs (equal sizes)."""
    torch.manual_seed(0)
    control = EGNNControl(EGNNConfig(node_features=1, num_layers=2, hidden=16))
    g = torch.Generator().manual_seed(1)
    batch = collate([SystemGraph.fully_connected(torch.ones(4, 1), dim=2)] * 8)
    batch = batch.replace(positions=torch.randn(32, 2, generator=g))
    return control, torch.rand(8, generator=g), batch, torch.randn(32, 2, generator=g)


def take(batch: SystemBatch, t: torch.Tensor, target: torch.Tensor, graphs: slice) -> tuple:  # type: ignore[type-arg]
    part = collate([SystemGraph.fully_connected(torch.ones(4, 1), dim=2)] * (graphs.stop - graphs.start))
    rows = slice(4 * graphs.start, 4 * graphs.stop)
    return t[graphs], part.replace(positions=batch.positions[rows]), target[rows]


def adam_steps(control: nn.Module, t: torch.Tensor, x: SystemBatch, target: torch.Tensor) -> None:
    """What ``AdjointSamplingTrainer._step`` does: mean squared error, backward, clip, Adam."""
    opt = torch.optim.Adam(control.parameters(), lr=1e-2)
    for _ in range(STEPS):
        opt.zero_grad()
        loss = ((control(t, x) - target) ** 2).sum(-1).mean()
        loss.backward()
        nn.utils.clip_grad_norm_(control.parameters(), 1.0)
        opt.step()


def _known_answer(rank: int, out: Path) -> None:
    control, t, batch, target = problem()
    install_gradient_averaging(control)
    share = 8 // WORLD
    adam_steps(control, *take(batch, t, target, slice(rank * share, (rank + 1) * share)))
    torch.save(control.state_dict(), out / f"rank{rank}.pt")


def _trainer_worker(ctx: DistributedContext, url: str, prefix: str, out: Path) -> None:
    import dataclasses

    from buffer.connection import RedisSettings, connect
    from buffer.keys import RedisKeys
    from training.synthetic import PRESETS
    from training.trainer_worker import TrainerWorkerConfig, run_trainer_worker

    dw4 = PRESETS["dw4"]
    run_config = dataclasses.replace(
        dw4,
        network=dataclasses.replace(dw4.network, hidden=8, num_layers=1),
        trainer=dataclasses.replace(dw4.trainer, samples_per_round=16, initial_samples=16, grad_steps_per_round=3,
                                    batch_size=8),
        train_grid=dataclasses.replace(dw4.train_grid, num_steps=10),
    )  # fmt: skip
    config = TrainerWorkerConfig(run="ddp", job_size=8, checkpoint_every=2)
    client = connect(RedisSettings(url=url))
    trainer = run_trainer_worker(
        run_config, config, client=client, out=out / "ddp.pt", max_rounds=2, keys=RedisKeys(prefix), ctx=ctx
    )
    (out / f"digest{ctx.rank}.txt").write_text(parameter_digest(trainer.control))


def _rank(rank: int, port: int, url: str, prefix: str, out: str) -> None:
    """One process of the group, as torchrun would start it; runs both scenarios (one spawn is cheaper)."""
    torchrun_env(rank, port, WORLD)
    ctx = DistributedContext.from_env()
    torch.set_num_threads(1)
    with process_group(ctx):
        _known_answer(rank, Path(out))
        _trainer_worker(ctx, url, prefix, Path(out))
    (Path(out) / f"left{rank}.txt").write_text(str(dist.is_initialized()))


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, EnergyWorker]]:
    """Two gloo ranks against a real Redis, with an energy worker (a thread here) serving DW-4."""
    server = EmbeddedRedis(EmbeddedRedisConfig(data_dir=Path(tmp_path_factory.mktemp("redis"))))
    url = server.start()
    out = Path(tmp_path_factory.mktemp("ddp"))
    prefix = f"t{uuid.uuid4().hex[:12]}"
    queue = EvaluationQueue(connect(RedisSettings(url=url)), model="dw4", keys=RedisKeys(prefix))
    stop = threading.Event()
    worker = EnergyWorker(queue, DoubleWell(), EnergyWorkerConfig(consumer="w", block_ms=20), stop=stop)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        mp.spawn(_rank, args=(free_port(), url, prefix, str(out)), nprocs=WORLD, join=True)
    finally:
        stop.set()
        thread.join()
        server.stop()
    yield out, worker


@pytest.mark.slow
@pytest.mark.redis
def test_gradient_averaging_matches_one_process_on_the_concatenated_batch(
    ddp_run: tuple[Path, EnergyWorker],
) -> None:
    out, _ = ddp_run
    ranks = [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]
    control, t, batch, target = problem()
    initial = {k: v.clone() for k, v in control.state_dict().items()}
    adam_steps(control, t, batch, target)  # the known answer: one process, all 8 graphs
    for name, value in control.state_dict().items():
        assert torch.equal(ranks[0][name], ranks[1][name]), f"{name} differs between ranks"
        torch.testing.assert_close(ranks[0][name], value, rtol=1e-5, atol=1e-6)
    moved = [k for k in initial if not torch.equal(initial[k], control.state_dict()[k])]
    assert moved, "the steps must change the parameters for the comparison to mean anything"


@pytest.mark.slow
@pytest.mark.redis
def test_trainer_worker_under_ddp_keeps_ranks_identical(ddp_run: tuple[Path, EnergyWorker]) -> None:
    out, worker = ddp_run
    digests = {(out / f"digest{r}.txt").read_text() for r in range(WORLD)}
    assert len(digests) == 1
    # every rank left the process group before its interpreter shut down
    assert [(out / f"left{r}.txt").read_text() for r in range(WORLD)] == ["False"] * WORLD
    saved = load_checkpoint(out / "ddp.pt")
    assert saved["round"] == 2 and saved["extra"]["world_size"] == WORLD
    assert len(saved["extra"]["rank_generators"]) == WORLD
    # each rank sampled its own share: 8 + 8 initial, then 8 + 8 per round, every one evaluated once
    assert worker.stats.structures == 16 + 2 * 16 and worker.stats.jobs_duplicate == 0
