"""The torsional conformer model trained through Redis: the trainer samples, energy workers evaluate.

The same run configuration, checkpoint kind (``torsional-conformers``) and loop as
:func:`training.torsional_training.train_torsional`, with step (a) of each round spread over processes like
the synthetic :mod:`training.trainer_worker`:

1. warm-up (bridge matching on ETKDG + MMFF94 torsions) in the trainer, no energy needed;
2. each RAM round: draw ``molecules_per_round`` systems, ``copies`` samples each, with the current control;
   post them as :class:`buffer.torsion_jobs.TorsionEvaluationJob` s of ``job_size`` samples (ids
   ``RUN:IDENTITY:rROUND:K``, deterministic, so a restarted trainer re-posting a round is a no-op) on the
   stream of the training energy model; ``worker energy --model NAME`` processes evaluate them
   (:func:`training.torsion_evaluation.evaluate_torsion_job`) and push the entries into the run's replay
   buffer in Redis, atomically with the acknowledgement (exactly once, each entry tagged with its sample id
   ``JOB_ID:K``);
3. once the round's jobs are done, ``gradient_steps`` RAM steps on batches drawn from that buffer.

Checkpoints (every ``checkpoint_every`` rounds, at the end, and on a stop) hold weights, optimizer and random
state and a reference to the buffer (the entries stay in Redis); each is announced under the run's key
(:mod:`buffer.published`) for ``serve`` / ``worker sample`` to swap in. A stop (SIGTERM) lets the round in
flight finish (waiting at most ``stop_grace_s`` for its evaluations), checkpoints and returns; restarting with
the same ``out`` resumes.

Under ``torchrun`` (gloo; :mod:`training.distributed`) every rank builds the same molecules and network, draws
its own share of each round's molecules with its own generator (seed ``seed + 7919 * rank``) and posts them as
jobs ``RUN:IDENTITY:rROUND:pRANK:K``; once every rank's samples are in the shared buffer, each takes the round's
``gradient_steps`` on its own ``batch_size`` draws with the gradients averaged across ranks (the effective batch
is ``world_size * batch_size``; warm-up steps alike). Rank 0 writes and publishes the checkpoints, which keep
every rank's generator state; a stop is agreed on by all ranks between steps and rounds (the round in flight
then finishes, bounded by ``wait_timeout_s``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

import redis
import torch
import torch.distributed as dist

from buffer.jobs import EvaluationQueue, JobState, JobStatus
from buffer.keys import RedisKeys
from buffer.redis import ResidentRedisReplayBuffer
from buffer.torsion_jobs import TorsionEvaluationJob
from sampler.torsion_geometry import torsion_positions
from training.checkpoint import save_checkpoint
from training.distributed import DistributedContext, any_rank, gather_objects, parameter_digest
from training.energy_worker import energy_stream_name
from training.torsional_training import (
    CHECKPOINT_KIND,
    TorsionalRunConfig,
    TorsionalTrainer,
    build_molecules,
    config_from_dict,
    config_to_dict,
)
from training.trainer_worker import (
    StopRequested,
    TrainerWorkerConfig,
    _bind_buffer,
    _config_fields,
    _identity,
    _join_ranks,
    _load_resumable,
    _publish,
    _rank_state,
    _RemoteEnergy,
    _resume_rank_generator,
    _slice,
    _train_rounds,
)

__all__ = [
    "StopDuringRound",
    "TorsionalRedisRounds",
    "energy_stream_name",
    "load_run_config",
    "run_identity",
    "run_torsional_worker",
]

log = logging.getLogger(__name__)


# -- the trainer's side -------------------------------------------------------------------------------------
class StopDuringRound(StopRequested):
    """The stop grace ran out while the round's evaluations were outstanding."""


class TorsionalRedisRounds:
    """Runs RAM rounds of ``trainer`` with ``queue``'s energy workers evaluating the samples."""

    def __init__(
        self,
        trainer: TorsionalTrainer,
        queue: EvaluationQueue,
        config: TrainerWorkerConfig,
        *,
        job_prefix: str,
        stop: threading.Event | None = None,
        stop_grace_s: float = 60.0,
        ctx: DistributedContext | None = None,
    ) -> None:
        self.trainer = trainer
        self.queue = queue
        self.config = config
        self.job_prefix = job_prefix
        self.stop = stop or threading.Event()
        self.stop_grace_s = stop_grace_s
        self.ctx = ctx or DistributedContext()

    def _job_id(self, k: int) -> str:
        rank = f":p{self.ctx.rank}" if self.ctx.is_distributed else ""
        return f"{self.job_prefix}:r{self.trainer.round}{rank}:{k}"

    def enqueue(self) -> list[str]:
        """Sample this round's conformers (this rank's share of them) with the current control and post them;
        returns the job ids."""
        t, c = self.trainer, self.trainer.config
        drawn = torch.randint(len(t.systems), (self.ctx.share(c.molecules_per_round),), generator=t.generator)
        system_ids = drawn.repeat_interleave(c.copies).tolist()
        batch, phi = t.sample(system_ids)
        with torch.no_grad():
            x = torsion_positions(batch, phi).to(torch.float64)
        structures = t.structures(batch, x)
        counts = batch.torsions_per_graph
        tptr = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)]).tolist()
        ids = []
        for k, start in enumerate(range(0, len(system_ids), self.config.job_size)):
            stop = min(start + self.config.job_size, len(system_ids))
            systems = [t.systems[i] for i in system_ids[start:stop]]
            job = TorsionEvaluationJob(
                job_id=self._job_id(k),
                buffer=self.config.run,
                structures=_slice(structures, start, stop),
                system_ids=batch.system_ids[start:stop],
                model_version=t.round,
                phi=phi[tptr[start] : tptr[stop]].detach(),
                num_torsions=counts[start:stop],
                torsion_atoms=torch.cat([s.torsion_atoms for s in systems]),
                moving_counts=torch.cat([s.moving_ptr[1:] - s.moving_ptr[:-1] for s in systems]),
                moving_atoms=torch.cat([s.moving_atoms for s in systems]),
                tau_ev=c.tau_ev,
                max_grad=c.max_grad,
                relax_iterations=c.relax_iterations,
            )
            if not self.queue.enqueue(job):
                log.info("job %s is already known (posted before a restart); not posted again", job.job_id)
            ids.append(job.job_id)
        t.energy_calls += c.molecules_per_round * c.copies  # every rank's share: the counter stays rank-independent
        return ids

    def wait(self, job_ids: list[str]) -> list[JobStatus]:
        """Block until every job is done or parked (a stop shortens the wait to ``stop_grace_s``)."""
        start = time.monotonic()
        stop_seen: float | None = None
        while True:
            statuses = self.queue.statuses(job_ids)
            missing = [j for j, s in zip(job_ids, statuses, strict=True) if s is None]
            if missing:
                raise RuntimeError(f"jobs {missing[:3]} are unknown to Redis (expired, or the server lost its data)")
            done = [s for s in statuses if s is not None]
            if all(s.state.finished for s in done):
                for job_id, s in zip(job_ids, done, strict=True):
                    if s.state is JobState.PARKED:
                        log.warning("job %s was parked, its samples are lost: %s", job_id, s.error)
                return done
            now = time.monotonic()
            if self.stop.is_set():
                stop_seen = now if stop_seen is None else stop_seen
                if now - stop_seen > self.stop_grace_s:
                    raise StopDuringRound
            if now - start > self.config.wait_timeout_s:
                left = sum(1 for s in done if not s.state.finished)
                raise TimeoutError(
                    f"{left} evaluation job(s) on {self.queue.stream} unfinished after "
                    f"{self.config.wait_timeout_s:.0f} s: is an energy worker running? "
                    f"(`adjoint-sampling worker energy --model {self.trainer.config.energy_model}`)"
                )
            time.sleep(self.config.poll_interval_s)

    def run_round(self) -> dict[str, float]:
        t = self.trainer
        start = time.perf_counter()
        job_ids = self.enqueue()
        posted = time.perf_counter()
        finished = self.wait(job_ids)
        if self.ctx.is_distributed:
            dist.barrier()  # every rank's samples are in the shared buffer before any rank draws from it
        if len(t.buffer) == 0:
            raise RuntimeError("the replay buffer is empty after evaluation: every sample was invalid")
        sampled = time.perf_counter()
        losses = [t.ram_step() for _ in range(t.config.gradient_steps)]
        t.round += 1
        end = time.perf_counter()
        seconds = end - start
        t.wall_seconds += seconds
        valid = sum(s.valid for s in finished)
        stats = {
            "round": float(t.round),
            "loss": float(sum(losses) / len(losses)) if losses else math.nan,
            "energy_mean_ev": sum(s.energy_sum for s in finished) / valid if valid else math.nan,
            "valid": float(valid),
            "sample_seconds": sampled - start,  # sampling, posting and waiting for the evaluations
            "post_seconds": posted - start,  # sampling and posting
            "wait_seconds": sampled - posted,  # waiting for the energy workers (and the other ranks)
            "gradient_seconds": end - sampled,
            "seconds": seconds,
        }
        t.history.append(stats)
        log.info(
            "round %d: loss %.4f, mean energy %.3f eV, %d valid, %.1f s (sampling and evaluation %.1f s)",
            t.round,
            stats["loss"],
            stats["energy_mean_ev"],
            valid,
            seconds,
            stats["sample_seconds"],
        )
        return stats


def _comparable(config: TorsionalRunConfig) -> dict[str, Any]:
    """The configuration without the round budget (which a restart may raise)."""
    d = config_to_dict(config)
    d.pop("max_rounds")
    return d


def run_identity(config: TorsionalRunConfig, seed: int, out: Path) -> str:
    """A deterministic name of one run (configuration, seed, checkpoint path): prefixes its job ids and owns
    its replay buffer, so a restart finds both again and another run touches neither."""
    return _identity(_comparable(config), seed, out)


def run_torsional_worker(
    config: TorsionalRunConfig,
    worker: TrainerWorkerConfig,
    *,
    client: redis.Redis,
    out: Path,
    data_dir: Path,
    seed: int = 0,
    max_rounds: int | None = None,
    reset_buffer: bool = False,
    keys: RedisKeys | None = None,
    stop: threading.Event | None = None,
    stop_grace_s: float = 60.0,
    ctx: DistributedContext | None = None,
) -> TorsionalTrainer:
    """Warm-up, then RAM rounds until ``max_rounds`` (default ``config.max_rounds``) or a stop; resumes from
    ``out`` when it exists (the same configuration apart from ``max_rounds``, else ``ValueError``).

    The run's replay buffer (named ``worker.run``) must be empty or this run's own; ``reset_buffer`` empties a
    buffer another run left behind. ``ctx``: this process's place under ``torchrun`` (the process group must be
    joined, with gloo: the torsional trainer runs on the CPU); every rank calls this function.
    """
    keys = keys or RedisKeys()
    stop = stop or threading.Event()
    ctx = ctx or DistributedContext()
    if ctx.world_size > config.molecules_per_round:
        raise ValueError(
            f"{ctx.world_size} ranks need at least as many molecules per round (molecules_per_round is "
            f"{config.molecules_per_round})"
        )
    payload = _load_resumable(out, CHECKPOINT_KIND, lambda d: _comparable(config_from_dict(d)) == _comparable(config))
    if payload is not None:
        seed = int(payload["extra"].get("seed", seed))
    identity = payload["extra"]["identity"] if payload is not None else run_identity(config, seed, out)
    molecules, warm = build_molecules(config, data_dir, seed=seed, show_progress=False)
    energy_name = config.energy_model
    trainer = TorsionalTrainer(config, molecules, _RemoteEnergy(energy_name), seed=seed, warmup_torsions=warm)
    if ctx.rank > 0:
        trainer.generator.manual_seed(seed + 7919 * ctx.rank)
    buffer = ResidentRedisReplayBuffer(client, capacity=config.buffer_size, name=worker.run, keys=keys)
    _bind_buffer(buffer, identity, reset=reset_buffer, ctx=ctx)
    trainer.buffer = buffer  # type: ignore[assignment]
    if payload is not None:
        _resume(trainer, buffer, payload, ctx)
        log.info("resumed %s at round %d (warm-up steps %d)", out, trainer.round, trainer.warmup_done)
    if ctx.is_distributed:
        if len(set(gather_objects((trainer.round, trainer.warmup_done), ctx))) != 1:
            raise RuntimeError(f"the ranks resumed at different points of {out}: does every rank see the same file?")
    _join_ranks(trainer.network, ctx)
    queue = EvaluationQueue(client, model=energy_stream_name(energy_name), keys=keys)
    rounds = TorsionalRedisRounds(
        trainer,
        queue,
        worker,
        job_prefix=f"{worker.run}:{identity}",
        # under DDP a stop is agreed between rounds (a rank leaving a round alone would block the others)
        stop=None if ctx.is_distributed else stop,
        stop_grace_s=stop_grace_s,
        ctx=ctx,
    )
    extra = {"seed": seed, "run": worker.run, "identity": identity}

    def save() -> None:
        _save(out, trainer, config, {**extra}, ctx)
        if ctx.is_main:
            info = _publish(client, out, run=worker.run, round=trainer.round, keys=keys)
            log.info("published checkpoint round %d (%s) as run %r", info.round, info.sha256[:12], worker.run)
        if ctx.is_distributed:
            dist.barrier()  # no rank goes on (or reads the file) before it is written

    while trainer.warmup_done < config.warmup_steps:
        if any_rank(stop.is_set(), ctx):
            save()
            return trainer
        trainer.warmup_step()
    _train_rounds(
        trainer,
        rounds.run_round,
        target=config.max_rounds if max_rounds is None else max_rounds,
        checkpoint_every=worker.checkpoint_every,
        save=save,  # a stop right after a checkpoint writes no second one
        stop_requested=lambda: any_rank(stop.is_set(), ctx),
        logger=log,
    )
    if ctx.is_distributed:
        log.info("rank %d parameters sha256 %s", ctx.rank, parameter_digest(trainer.network))
    return trainer


def _save(
    out: Path, trainer: TorsionalTrainer, config: TorsionalRunConfig, extra: dict[str, Any], ctx: DistributedContext
) -> None:
    """Rank 0 writes the checkpoint; under DDP every rank contributes its generator state (a collective) and the
    ranks' parameters are checked to be identical."""
    if ctx.is_distributed:
        extra = {**extra, **_rank_state(trainer.generator, trainer.network, ctx)}
    if ctx.is_main:
        save_checkpoint(out, trainer, config_to_dict(config), kind=CHECKPOINT_KIND, extra=extra)


def _resume(
    trainer: TorsionalTrainer, buffer: ResidentRedisReplayBuffer, payload: dict[str, Any], ctx: DistributedContext
) -> None:
    """Weights, optimizer, counters and random state of the checkpoint; a rank > 0 takes its own generator state
    (or, from a checkpoint of another world size, a fresh one)."""
    trainer.load_state_dict({**payload, **payload["resume"]})
    buffer.load_state_dict(payload["resume"]["buffer"])
    torch.set_rng_state(payload["resume"]["torch_rng"])
    _resume_rank_generator(trainer.generator, payload, ctx, round=trainer.round, logger=log)


def load_run_config(path: Path | None, **overrides: Any) -> TorsionalRunConfig:
    """The product's torsional run configuration, with the fields of a JSON file (any subset of
    :func:`training.torsional_training.config_to_dict`'s, ``network`` merged field by field) and then
    ``overrides`` (``None`` values ignored) on top."""
    d = _config_fields(config_to_dict(TorsionalRunConfig()), path, overrides)
    try:
        return config_from_dict(d)
    except TypeError as exc:
        raise ValueError(f"invalid run configuration: {exc}") from exc
