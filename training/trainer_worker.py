"""The training worker: the Adjoint Sampling alternation (ALGORITHM.md section 5) with the energy
evaluations done by a pool of energy workers through Redis.

Each round: (a) sample ``M`` terminal states with the current control and post them as evaluation
jobs (deterministic ids ``RUN:rROUND:K``; the workers push ``(system, X_1, E, -clip(grad g))`` into the
run's replay buffer in Redis); (b) once the jobs of round ``round - max_lag_rounds`` are done, take
``K`` Adam steps of the RAM loss on minibatches drawn from that buffer. ``max_lag_rounds = 0`` is the
published alternation; ``1`` trains on the buffer while the newest samples are evaluated.

Checkpoints (every ``checkpoint_every`` rounds, and on a graceful stop) hold the trainer's state and a
*reference* to the buffer (the entries stay in Redis) and are announced under the run's checkpoint key
(:mod:`buffer.published`). Restarting with the same ``--out`` resumes from the last checkpoint; jobs
re-created by the resumed run carry the ids of the ones posted before the crash and are not evaluated
twice. Under ``torchrun`` every rank samples its share of each round and steps on its own minibatches
with gradients averaged across ranks (:mod:`training.distributed`); rank 0 writes the checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import redis
import torch
from torch import nn

from buffer.jobs import AdjointSpec, EvaluationJob, EvaluationQueue, JobState, JobStatus
from buffer.keys import RedisKeys, validate_name
from buffer.published import PublishedCheckpoint, publish_checkpoint
from buffer.redis import ResidentRedisReplayBuffer
from energy.protocol import EnergyResult, Structures
from energy.target import EnergyTarget
from sampler.state import SystemBatch
from sampler.trainer import AdjointSamplingTrainer, RoundStats
from training.checkpoint import file_sha256, load_checkpoint, restore_trainer, save_checkpoint
from training.distributed import (
    DistributedContext,
    any_rank,
    broadcast_parameters,
    gather_objects,
    install_gradient_averaging,
    parameter_digest,
)
from training.synthetic import SyntheticRunConfig, build_energy, build_trainer

__all__ = ["RedisAlternation", "StopRequested", "TrainerWorkerConfig", "run_trainer_worker"]

log = logging.getLogger(__name__)


class StopRequested(Exception):
    """A stop (SIGTERM) arrived while the round was waiting for energy workers."""


class _RemoteEnergy:
    """The trainer's energy model: evaluations happen in the energy workers, never here."""

    def __init__(self, name: str) -> None:
        self.name = name

    def evaluate(self, structures: Structures) -> EnergyResult:
        raise RuntimeError(f"the {self.name} energies of this run are evaluated by `worker energy` processes")


@dataclass(frozen=True, kw_only=True)
class TrainerWorkerConfig:
    """How the training worker talks to the energy workers (operational: may change across restarts).

    Attributes:
        run: run name: the replay buffer's name, the prefix of job ids, the checkpoint key.
        job_size: structures per evaluation job.
        max_lag_rounds: rounds the gradient steps may run ahead of the evaluations (0: none).
        checkpoint_every: rounds between checkpoints.
        wait_timeout_s: give up (with an error naming the stream) if jobs stay unfinished this long.
        poll_interval_s: how often job statuses are checked while waiting.
    """

    run: str
    job_size: int = 16
    max_lag_rounds: int = 0
    checkpoint_every: int = 25
    wait_timeout_s: float = 600.0
    poll_interval_s: float = 0.05

    def __post_init__(self) -> None:
        validate_name("run name", self.run)
        if self.job_size < 1 or self.max_lag_rounds < 0 or self.checkpoint_every < 1:
            raise ValueError("job_size and checkpoint_every must be >= 1, max_lag_rounds >= 0")


def _slice(structures: Structures, start: int, stop: int) -> Structures:
    ptr = torch.cat([structures.num_atoms.new_zeros(1), torch.cumsum(structures.num_atoms, 0)]).tolist()
    a, b = ptr[start], ptr[stop]
    tables = structures.connection_tables
    return Structures(
        positions=structures.positions[a:b],
        num_atoms=structures.num_atoms[start:stop],
        atomic_numbers=structures.atomic_numbers[a:b],
        total_charge=structures.total_charge[start:stop],
        multiplicity=structures.multiplicity[start:stop],
        connection_tables=tables[start:stop] if tables is not None else None,
    )


class RedisAlternation:
    """Runs rounds of ``trainer`` with ``queue``'s energy workers evaluating the samples."""

    def __init__(
        self,
        trainer: AdjointSamplingTrainer,
        queue: EvaluationQueue,
        structures_of: Callable[[SystemBatch], Structures],
        config: TrainerWorkerConfig,
        *,
        job_prefix: str | None = None,
        ctx: DistributedContext | None = None,
        stop: threading.Event | None = None,
        stop_grace_s: float = 0.0,
    ) -> None:
        self.job_prefix = job_prefix or config.run
        self.stop_grace_s = stop_grace_s
        self.trainer = trainer
        self.queue = queue
        self.structures_of = structures_of
        self.config = config
        self.ctx = ctx or DistributedContext()
        self.stop = stop or threading.Event()
        self._outstanding: deque[tuple[int, list[str]]] = deque()

    def _job_id(self, tag: str, k: int) -> str:
        rank = f":p{self.ctx.rank}" if self.ctx.is_distributed else ""
        return f"{self.job_prefix}:{tag}{rank}:{k}"

    def enqueue(self, tag: str, count: int, *, controlled: bool) -> list[str]:
        """Sample ``count`` terminal states and post them as jobs; returns the job ids."""
        t = self.trainer
        x1 = t.sample(count, controlled=controlled).to("cpu")
        structures = self.structures_of(x1)
        spec = AdjointSpec(tau=t.config.tau, max_grad_norm=t.config.max_grad_norm, schedule=t.schedule)
        ids = []
        for k, start in enumerate(range(0, count, self.config.job_size)):
            stop = min(start + self.config.job_size, count)
            job = EvaluationJob(
                job_id=self._job_id(tag, k),
                buffer=self.config.run,
                structures=_slice(structures, start, stop),
                system_ids=x1.system_ids[start:stop],
                model_version=t.round,
                adjoint=spec,
            )
            if not self.queue.enqueue(job):
                log.info("job %s is already known (posted before a restart); not posted again", job.job_id)
            ids.append(job.job_id)
        t.energy_calls += count
        return ids

    def wait(self, job_ids: list[str]) -> list[JobStatus]:
        """Block until every job is done or parked; raises on timeout, or ``stop_grace_s`` after a stop request."""
        start = time.monotonic()
        last_report = start
        stop_seen: float | None = None
        while True:
            statuses = self.queue.statuses(job_ids)
            missing = [j for j, s in zip(job_ids, statuses, strict=True) if s is None]
            if missing:
                raise RuntimeError(f"jobs {missing[:3]} are unknown to Redis (expired, or the server lost its data)")
            if all(s is not None and s.state.finished for s in statuses):
                for job_id, s in zip(job_ids, statuses, strict=True):
                    if s is not None and s.state is JobState.PARKED:
                        log.warning("job %s was parked, its samples are lost: %s", job_id, s.error)
                return [s for s in statuses if s is not None]
            now = time.monotonic()
            if self.stop.is_set():
                stop_seen = now if stop_seen is None else stop_seen
                if now - stop_seen >= self.stop_grace_s:
                    raise StopRequested
            if now - start > self.config.wait_timeout_s:
                left = sum(1 for s in statuses if s is not None and not s.state.finished)
                raise TimeoutError(
                    f"{left} evaluation job(s) on {self.queue.stream} unfinished after "
                    f"{self.config.wait_timeout_s:.0f} s:"
                    f" is an energy worker running? (`adjoint-sampling worker energy --model {self.queue.model}`)"
                )
            if now - last_report > 10.0:
                left = sum(1 for s in statuses if s is not None and not s.state.finished)
                log.info(
                    "waiting for %d of %d evaluation jobs (stream backlog %d)", left, len(job_ids), self.queue.backlog()
                )
                last_report = now
            time.sleep(self.config.poll_interval_s)

    def run_round(self) -> RoundStats:
        t, c = self.trainer, self.trainer.config
        start = time.perf_counter()
        if t.round == 0 and not self._outstanding:
            self.wait(self.enqueue("init", self.ctx.share(c.initial_samples), controlled=False))
        r = t.round
        self._outstanding.append((r, self.enqueue(f"r{r}", self.ctx.share(c.samples_per_round), controlled=True)))
        finished: list[JobStatus] = []
        while self._outstanding and self._outstanding[0][0] <= r - self.config.max_lag_rounds:
            finished += self.wait(self._outstanding.popleft()[1])
        if len(t.buffer) == 0:
            raise RuntimeError("the replay buffer is empty after evaluation: every sample was invalid")
        mid = time.perf_counter()
        loss = t.gradient_steps(c.grad_steps_per_round)
        end = time.perf_counter()
        t.round += 1
        t.wall_seconds += end - start
        evaluated = sum(s.evaluated for s in finished)
        valid = sum(s.valid for s in finished)
        mean_e = sum(s.energy_sum for s in finished) / valid if valid else float("nan")
        stats = RoundStats(
            t.round,
            loss,
            mean_e,
            valid / evaluated if evaluated else float("nan"),
            t.energy_calls,
            t.wall_seconds,
            mid - start,
            end - mid,
        )
        t.history.append(stats)
        log.info(stats.line())
        return stats


def run_identity(run_config: SyntheticRunConfig, seed: int, out: Path) -> str:
    """A deterministic name for one training run (configuration, seed, checkpoint path): prefixes its
    job ids and owns its replay buffer, so a restart finds both again and another run touches neither."""
    return _identity(run_config.to_dict(), seed, out)


def _identity(config: dict[str, Any], seed: int, out: Path) -> str:
    """The hash behind every Redis trainer's ``run_identity``: ``config`` (the fields that name the run), seed and
    the absolute checkpoint path."""
    blob = json.dumps([config, seed, str(out.absolute())], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# -- shared by the Redis trainers (this one, training.conformer_worker, training.torsional_worker) ----------
def _config_fields(
    defaults: dict[str, Any],
    path: Path | None,
    overrides: dict[str, Any],
    *,
    replaces: Callable[[str, Any], bool] = lambda key, value: False,
) -> dict[str, Any]:
    """``defaults`` (a run configuration's fields) with the fields of the JSON file at ``path`` on top (nested
    objects merged field by field, unless ``replaces(key, value)``), then ``overrides`` (``None`` values ignored).
    ``ValueError`` for a file that cannot be read, holds no JSON object, or names unknown fields."""
    d = dict(defaults)
    if path is not None:
        try:
            given = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read the run configuration {path}: {exc}") from exc
        if not isinstance(given, dict):
            raise ValueError(f"{path} must hold a JSON object of run-configuration fields")
        unknown = sorted(set(given) - set(d))
        if unknown:
            raise ValueError(f"{path}: unknown run-configuration fields {unknown}; known: {sorted(d)}")
        for key, value in given.items():
            merge = isinstance(d[key], dict) and isinstance(value, dict) and not replaces(key, value)
            d[key] = {**d[key], **value} if merge else value
    d.update({k: v for k, v in overrides.items() if v is not None})
    return d


def _load_resumable(out: Path, kind: str, same_config: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    """The checkpoint at ``out`` to resume from (``None`` when there is none yet); ``ValueError`` unless it is a
    resumable ``kind`` checkpoint whose configuration ``same_config`` accepts."""
    if not out.exists():
        return None
    payload = load_checkpoint(out)
    if payload.get("kind") != kind or "resume" not in payload:
        raise ValueError(f"{out} is not a resumable {kind!r} checkpoint; choose another --out")
    if not same_config(payload["config"]):
        raise ValueError(f"{out} was trained with a different configuration; refusing to resume (use a new --out)")
    return payload


def _publish(client: redis.Redis, out: Path, *, run: str, round: int, keys: RedisKeys) -> PublishedCheckpoint:
    """Announce the checkpoint just written to ``out`` under ``run``'s key (:mod:`buffer.published`)."""
    return publish_checkpoint(
        client,
        run=run,
        path=str(out.absolute()),
        round=round,
        sha256=file_sha256(out),
        keys=keys,
    )


def _join_ranks(network: nn.Module, ctx: DistributedContext) -> None:
    """Under DDP (every rank, after resuming): rank 0's parameters everywhere, gradients averaged across ranks."""
    if ctx.is_distributed:
        broadcast_parameters(network)
        install_gradient_averaging(network)


def _rank_state(generator: torch.Generator, network: nn.Module, ctx: DistributedContext) -> dict[str, Any]:
    """A collective: every rank's generator state for the checkpoint's ``extra``, once the ranks' parameters are
    checked to be identical."""
    generators = gather_objects(generator.get_state(), ctx)
    digests = gather_objects(parameter_digest(network), ctx)
    if len(set(digests)) != 1:
        raise RuntimeError(f"data-parallel ranks hold different parameters: {digests}")
    return {"world_size": ctx.world_size, "rank_generators": generators}


def _resume_rank_generator(
    generator: torch.Generator, payload: dict[str, Any], ctx: DistributedContext, *, round: int, logger: logging.Logger
) -> None:
    """A rank > 0 takes its own generator state from the checkpoint (or, from one of another world size, a fresh
    one); rank 0's came with the trainer's state."""
    if ctx.rank == 0:
        return
    generators = payload["extra"].get("rank_generators")
    if generators is not None and len(generators) == ctx.world_size:
        generator.set_state(generators[ctx.rank])
    else:
        logger.warning("checkpoint written with another world size: rank %d draws a fresh generator", ctx.rank)
        generator.manual_seed(int(payload["extra"].get("seed", 0)) + 7919 * ctx.rank + round)


class _Rounds(Protocol):
    round: int


def _train_rounds(
    trainer: _Rounds,
    run_round: Callable[[], object],
    *,
    target: int,
    checkpoint_every: int,
    save: Callable[[], None],
    stop_requested: Callable[[], bool],
    logger: logging.Logger,
    in_budget: Callable[[], bool] = lambda: True,
) -> None:
    """Rounds until ``trainer.round`` reaches ``target`` (or ``in_budget`` says no more), with ``save`` every
    ``checkpoint_every`` rounds and at the end (not twice for one round). A stop (``stop_requested``, asked
    before each round) checkpoints the round reached; a :class:`StopRequested` from a round waiting for its
    evaluations checkpoints the last full round."""
    last_saved = -1
    while trainer.round < target and in_budget():
        if stop_requested():
            logger.info("stop requested: checkpointing at round %d", trainer.round)
            break
        try:
            run_round()
        except StopRequested:
            logger.info(
                "stopped while waiting for evaluations in round %d; checkpointing the last full round", trainer.round
            )
            break
        if trainer.round % checkpoint_every == 0:
            save()
            last_saved = trainer.round
    if last_saved != trainer.round:
        save()


def _save(
    out: Path,
    alternation: RedisAlternation,
    extra: dict[str, Any],
    client: redis.Redis,
    keys: RedisKeys,
    run_config: SyntheticRunConfig,
) -> None:
    """Rank 0 writes and publishes; every rank contributes its generator state (a collective)."""
    trainer, ctx = alternation.trainer, alternation.ctx
    ranks = _rank_state(trainer.generator, trainer.control, ctx)
    if not ctx.is_main:
        return
    save_checkpoint(out, trainer, run_config.to_dict(), kind="synthetic", extra={**extra, **ranks})
    info = _publish(client, out, run=alternation.config.run, round=trainer.round, keys=keys)
    log.info("published checkpoint round %d (%s)", info.round, info.sha256[:12])


def _resume(trainer: AdjointSamplingTrainer, payload: dict[str, Any], ctx: DistributedContext) -> None:
    restore_trainer(trainer, payload)
    _resume_rank_generator(trainer.generator, payload, ctx, round=trainer.round, logger=log)
    log.info("resumed at round %d", trainer.round)


def _bind_buffer(buffer: ResidentRedisReplayBuffer, identity: str, *, reset: bool, ctx: DistributedContext) -> None:
    previous = buffer.bind_owner(identity)
    if previous is None or previous == identity:
        return
    if not reset:
        raise ValueError(
            f"the replay buffer {buffer.name!r} in Redis belongs to another run ({previous}, this one is {identity}): "
            "name this run with --run, or pass --reset-buffer to empty the buffer and take it over"
        )
    if ctx.is_main:
        log.warning("emptying replay buffer %r of run %s (%d entries)", buffer.name, previous, len(buffer))
        buffer.clear(owner=identity)
    if ctx.is_distributed:
        torch.distributed.barrier()


def run_trainer_worker(
    run_config: SyntheticRunConfig,
    config: TrainerWorkerConfig,
    *,
    client: redis.Redis,
    out: Path,
    seed: int = 0,
    max_rounds: int | None = None,
    reset_buffer: bool = False,
    keys: RedisKeys | None = None,
    ctx: DistributedContext | None = None,
    stop: threading.Event | None = None,
) -> AdjointSamplingTrainer:
    """Train until ``max_rounds`` (default: the configuration's) or a stop request; resume from
    ``out`` if it exists. The learning-rate schedule follows ``run_config.max_rounds``.

    The run's replay buffer (named ``config.run``) must be empty, or its own from before a restart;
    ``reset_buffer`` empties a buffer another run left behind.
    """
    keys = keys or RedisKeys()
    ctx = ctx or DistributedContext()
    stop = stop or threading.Event()
    payload = load_checkpoint(out) if out.exists() else None
    if payload is not None and SyntheticRunConfig.from_dict(payload["config"]) != run_config:
        raise ValueError(f"{out} was trained with a different configuration; refusing to resume (use a new --out)")
    identity = run_identity(run_config, seed, out)
    if payload is not None:
        identity = payload["extra"].get("identity", identity)
    trainer = build_trainer(run_config, seed)
    trainer.control.to(ctx.device())
    if ctx.rank > 0:
        trainer.generator.manual_seed(seed + 7919 * ctx.rank)
    buffer = ResidentRedisReplayBuffer(client, capacity=run_config.buffer_capacity, name=config.run, keys=keys)
    _bind_buffer(buffer, identity, reset=reset_buffer, ctx=ctx)
    trainer.buffer = buffer
    if payload is not None:
        _resume(trainer, payload, ctx)
    _join_ranks(trainer.control, ctx)
    energy = build_energy(run_config.system)
    queue = EvaluationQueue(client, model=energy.name, keys=keys)
    # under DDP a stop is honoured only between rounds, where all ranks agree on it
    alternation = RedisAlternation(
        trainer,
        queue,
        EnergyTarget(model=energy).structures,
        config,
        job_prefix=f"{config.run}:{identity}",
        ctx=ctx,
        stop=None if ctx.is_distributed else stop,
    )
    extra = {"seed": seed, "run": config.run, "identity": identity}
    rounds = run_config.max_rounds if max_rounds is None else max_rounds
    while trainer.round < rounds:
        if any_rank(stop.is_set(), ctx):
            log.info("stop requested: checkpointing at round %d", trainer.round)
            _save(out, alternation, extra, client, keys, run_config)
            return trainer
        trainer.set_progress(trainer.round / run_config.max_rounds)
        try:
            alternation.run_round()
        except StopRequested:
            log.info("stopped while waiting for evaluations in round %d; the last checkpoint stands", trainer.round)
            return trainer
        if trainer.round % config.checkpoint_every == 0 or trainer.round == rounds:
            _save(out, alternation, extra, client, keys, run_config)
    log.info("rank %d parameters sha256 %s", ctx.rank, parameter_digest(trainer.control))
    return trainer
