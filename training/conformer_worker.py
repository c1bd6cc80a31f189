"""The Cartesian conformer model trained through Redis: the trainer samples, energy workers evaluate.

The same run configuration (:class:`training.conformer_training.ConformerRunConfig`), checkpoint kind
(``conformers``) and loop as :func:`training.conformer_training.train_conformers`, with the energy evaluations of
each round spread over ``worker energy --model NAME`` processes as in the synthetic :mod:`training.trainer_worker`:

1. warm-up (bridge matching on ETKDG conformers) in the trainer, no energy needed; a stop between chunks of 50
   steps checkpoints and a restart continues it;
2. the buffer is seeded once with base-process samples (jobs ``RUN:IDENTITY:init:K``); each RAM round samples
   ``samples_per_round`` conformers with the current control and posts them as
   :class:`buffer.jobs.EvaluationJob` s of ``job_size`` structures (ids ``RUN:IDENTITY:rROUND:K``, deterministic,
   so a restarted trainer re-posting a round is a no-op), each structure with its molecule's mol block so the
   worker's energy model (MMFF94, GFN2-xTB, ...) rebuilds it (and caches it per molecule); the workers evaluate
   once, compute the target ``-clip(grad g)`` (:func:`training.energy_worker.evaluate_job_entries`) and push the
   entries, tagged with their sample ids ``JOB_ID:K``, into the run's replay buffer in Redis atomically with the
   acknowledgement (exactly once);
3. once the round's jobs are done, ``grad_steps_per_round`` RAM steps on batches drawn from that buffer.

Checkpoints (every ``checkpoint_every`` rounds, at the end, and on a stop) hold weights, optimizer and random state
and a reference to the buffer (the entries stay in Redis) and are announced under the run's key
(:mod:`buffer.published`). A stop (SIGTERM) lets the round in flight finish (waiting at most ``stop_grace_s`` for its
evaluations), checkpoints and returns; restarting with the same ``out`` resumes. The round budget
(``max_rounds``, which also sets the learning-rate schedule) and ``max_minutes`` (per call) are the
configuration's, as in ``train-conformers``.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import redis

from buffer.jobs import EvaluationQueue
from buffer.keys import RedisKeys
from buffer.redis import ResidentRedisReplayBuffer
from energy.target import EnergyTarget
from sampler.trainer import AdjointSamplingTrainer
from training.checkpoint import restore_trainer, save_checkpoint
from training.conformer_training import (
    CHECKPOINT_KIND,
    ConformerRunConfig,
    build_conformer_trainer,
    training_systems,
    warm_up,
)
from training.distributed import DistributedContext
from training.energy_worker import energy_stream_name
from training.trainer_worker import (
    RedisAlternation,
    TrainerWorkerConfig,
    _bind_buffer,
    _config_fields,
    _identity,
    _load_resumable,
    _publish,
    _RemoteEnergy,
    _train_rounds,
)

__all__ = ["load_conformer_run_config", "run_conformer_worker", "run_identity"]

log = logging.getLogger(__name__)

_BUDGET = ("max_rounds", "max_minutes")  # what a restart may change


def _comparable(config: ConformerRunConfig) -> dict[str, Any]:
    """The configuration without its budget (which a restart may raise)."""
    return {k: v for k, v in config.to_dict().items() if k not in _BUDGET}


def run_identity(config: ConformerRunConfig, seed: int, out: Path) -> str:
    """A deterministic name of one run (configuration without its budget, seed, checkpoint path): prefixes its job
    ids and owns its replay buffer, so a restart finds both again and another run touches neither."""
    return _identity(_comparable(config), seed, out)


def run_conformer_worker(
    config: ConformerRunConfig,
    worker: TrainerWorkerConfig,
    *,
    client: redis.Redis,
    out: Path,
    data_dir: Path,
    cache_dir: Path | None = None,
    seed: int = 0,
    max_rounds: int | None = None,
    reset_buffer: bool = False,
    keys: RedisKeys | None = None,
    stop: threading.Event | None = None,
    stop_grace_s: float = 60.0,
    show_progress: bool = False,
) -> AdjointSamplingTrainer:
    """Warm-up, then RAM rounds until ``max_rounds`` (default ``config.max_rounds``), ``config.max_minutes`` of this
    call, or a stop; resumes from ``out`` when it exists (the same configuration apart from its budget, else
    ``ValueError``).

    The run's replay buffer (named ``worker.run``) must be empty or this run's own; ``reset_buffer`` empties a
    buffer another run left behind.
    """
    started = time.monotonic()
    keys = keys or RedisKeys()
    stop = stop or threading.Event()
    payload = _load_resumable(
        out, CHECKPOINT_KIND, lambda d: _comparable(ConformerRunConfig.from_dict(d)) == _comparable(config)
    )
    if payload is not None:
        seed = int(payload["extra"].get("seed", seed))
    # a train-conformers checkpoint (no identity; its in-memory buffer copied into Redis) continues here too
    identity = (payload["extra"].get("identity") if payload is not None else None) or run_identity(config, seed, out)
    systems = training_systems(config, data_dir, seed)
    log.info(
        "%d training molecules, %d to %d atoms",
        len(systems),
        min(s.num_atoms for s in systems),
        max(s.num_atoms for s in systems),
    )
    trainer = build_conformer_trainer(config, systems, seed, energy=_RemoteEnergy(config.energy_model))
    buffer = ResidentRedisReplayBuffer(client, capacity=config.buffer_capacity, name=worker.run, keys=keys)
    _bind_buffer(buffer, identity, reset=reset_buffer, ctx=DistributedContext())
    trainer.buffer = buffer
    extra: dict[str, Any] = {"seed": seed, "warmup_loss": None, "run": worker.run, "identity": identity}
    if payload is not None:
        restore_trainer(trainer, payload)
        extra = {**extra, **payload["extra"]}
        log.info("resumed %s at round %d", out, trainer.round)
    queue = EvaluationQueue(client, model=energy_stream_name(config.energy_model), keys=keys)
    energy_target = trainer.target
    assert isinstance(energy_target, EnergyTarget)  # what build_conformer_trainer makes
    alternation = RedisAlternation(
        trainer,
        queue,
        energy_target.structures,  # positions, elements, charge, spin and mol block of each sample
        worker,
        job_prefix=f"{worker.run}:{identity}",
        stop=stop,
        stop_grace_s=stop_grace_s,
    )

    def save() -> None:
        save_checkpoint(out, trainer, config.to_dict(), kind=CHECKPOINT_KIND, extra=extra)
        info = _publish(client, out, run=worker.run, round=trainer.round, keys=keys)
        log.info("published checkpoint round %d (%s) as run %r", info.round, info.sha256[:12], worker.run)

    if trainer.round == 0 and config.warmup_steps > 0:
        done = warm_up(
            trainer,
            config,
            systems,
            extra,
            seed=seed,
            cache_dir=cache_dir,
            out=out,
            checkpoint_every=worker.checkpoint_every,
            show_progress=show_progress,
            stop=stop.is_set,
        )
        if not done:
            save()
            return trainer

    def run_round() -> None:
        trainer.set_progress(trainer.round / config.max_rounds)
        alternation.run_round()

    _train_rounds(
        trainer,
        run_round,
        target=config.max_rounds if max_rounds is None else max_rounds,
        checkpoint_every=worker.checkpoint_every,
        save=save,
        stop_requested=stop.is_set,
        logger=log,
        in_budget=lambda: time.monotonic() - started < 60.0 * config.max_minutes,
    )
    return trainer


def load_conformer_run_config(path: Path | None, **overrides: Any) -> ConformerRunConfig:
    """The Cartesian conformer run configuration (``ConformerRunConfig()``'s defaults, those of
    ``train-conformers``), with the fields of a JSON file (any subset of :meth:`ConformerRunConfig.to_dict`'s, nested
    ones merged field by field, except a ``network`` naming its ``kind``, which replaces the default EGNN) and then
    ``overrides`` (``None`` values ignored) on top."""
    d = _config_fields(
        ConformerRunConfig().to_dict(),
        path,
        overrides,
        # a network with its "kind" replaces the EGNN
        replaces=lambda key, value: key == "network" and isinstance(value, dict) and "kind" in value,
    )
    try:
        return ConformerRunConfig.from_dict(d)
    except (TypeError, KeyError) as exc:
        raise ValueError(f"invalid run configuration: {exc}") from exc
