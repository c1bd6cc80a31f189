"""Run a synthetic training job with a time/round budget, progress bar and periodic checkpoints."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tqdm import tqdm

from sampler.trainer import AdjointSamplingTrainer
from training.checkpoint import load_checkpoint, restore_trainer, save_checkpoint
from training.synthetic import SyntheticRunConfig, build_trainer

__all__ = ["train_synthetic"]

log = logging.getLogger(__name__)


def train_synthetic(
    config: SyntheticRunConfig,
    *,
    seed: int,
    out: Path | None,
    resume: Path | None = None,
    checkpoint_every: int = 25,
    max_rounds: int | None = None,
    max_minutes: float | None = None,
    show_progress: bool = True,
) -> AdjointSamplingTrainer:
    """Train until ``max_rounds`` or ``max_minutes`` of training wall time (both from the config by
    default), checkpointing every ``checkpoint_every`` rounds and at the end.

    The learning-rate schedule follows ``config.max_rounds`` only (never the clock), so a seed reproduces
    a run and a resumed run continues the same schedule; ``max_rounds`` here may stop a run earlier.
    """
    trainer = build_trainer(config, seed)
    if resume is not None:
        payload = load_checkpoint(resume)
        if SyntheticRunConfig.from_dict(payload["config"]) != config:
            raise ValueError(f"{resume} was trained with a different configuration; refusing to resume")
        restore_trainer(trainer, payload)
        log.info("resumed from %s at round %d", resume, trainer.round)
    rounds = config.max_rounds if max_rounds is None else max_rounds
    minutes = config.max_minutes if max_minutes is None else max_minutes
    extra = {"seed": seed}
    bar = tqdm(total=rounds, initial=trainer.round, desc=f"train {config.system}", disable=not show_progress)
    start = time.perf_counter() - trainer.wall_seconds
    try:
        while trainer.round < rounds and time.perf_counter() - start < 60.0 * minutes:
            trainer.set_progress(trainer.round / config.max_rounds)
            stats = trainer.run_round()
            bar.update(1)
            bar.set_postfix(loss=f"{stats.loss:.3g}", E=f"{stats.mean_energy:.3g}")
            if out is not None and checkpoint_every > 0 and trainer.round % checkpoint_every == 0:
                save_checkpoint(out, trainer, config.to_dict(), kind="synthetic", extra=extra)
    finally:
        bar.close()
        if out is not None:
            save_checkpoint(out, trainer, config.to_dict(), kind="synthetic", extra=extra)
    return trainer
