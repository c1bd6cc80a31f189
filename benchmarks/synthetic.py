"""Synthetic benchmark: train Adjoint Sampling on DW-4 and LJ-13 over several seeds, score x-W2 and
E-W2 against the shared MCMC reference samples (2000 vs 2000), and write a markdown table beside the
published rows, a JSON file and PNG plots to ``benchmarks/results/``.

Reproduce: ``adjoint-sampling bench synthetic --systems dw4 lj13 --seeds 0 1 2``
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.metrics import e_w2, x_w2, x_w2_aligned
from benchmarks.synthetic_report import PUBLISHED, write_results
from sampler.state import collate
from training.checkpoint import versions
from training.synthetic import PRESETS, GridConfig, SyntheticRunConfig, build_energy, build_system
from training.synthetic_training import train_synthetic

__all__ = ["PUBLISHED", "generate", "reference_samples", "run"]

log = logging.getLogger(__name__)

REFERENCE_FILE = {"dw4": "DW4_test.npy", "lj13": "LJ13_test.npy"}
HELD_OUT_FILE = {"dw4": "DW4_val.npy", "lj13": "LJ13_val.npy"}


def reference_floor(system: str, data_dir: Path, count: int) -> dict[str, float]:
    """The metrics between two independent MCMC sets (val vs test): what a perfect sampler would score."""
    a = reference_samples(system, data_dir, count, seed=0)
    path = data_dir / "synthetic" / HELD_OUT_FILE[system]
    b = np.load(path)[np.random.default_rng(1).choice(10_000, size=count, replace=False)].astype(np.float64)
    dim = build_energy(system).dim
    return {
        "x_w2": x_w2_aligned(b, a, dim),
        "x_w2_plain": x_w2(b, a, dim),
        "e_w2": e_w2(_energies(system, b), _energies(system, a)),
    }


def reference_samples(system: str, data_dir: Path, count: int, seed: int) -> np.ndarray:
    path = data_dir / "synthetic" / REFERENCE_FILE[system]
    if not path.is_file():
        raise FileNotFoundError(f"reference samples not found: {path} (pass --data-dir)")
    data = np.load(path)
    idx = np.random.default_rng(seed).choice(data.shape[0], size=count, replace=False)
    return data[idx].astype(np.float64)


def generate(
    control: torch.nn.Module, config: SyntheticRunConfig, count: int, grid: GridConfig, seed: int
) -> np.ndarray:
    """``count`` samples ``[count, n * d]`` from a trained control."""
    energy = build_energy(config.system)
    integrator = grid.build_integrator(config.schedule)
    control.eval()
    out = integrator.sample(control, collate([build_system(energy)] * count), torch.Generator().manual_seed(seed))
    return out.positions.reshape(count, -1).double().numpy()


def _load_trainer(config: SyntheticRunConfig, checkpoint: Path, seed: int) -> Any:
    """A trainer restored from a benchmark checkpoint (for ``--evaluate-only``)."""
    from training.checkpoint import load_checkpoint
    from training.synthetic import build_trainer

    payload = load_checkpoint(checkpoint)
    trained = SyntheticRunConfig.from_dict(payload["config"])
    trainer = build_trainer(trained, seed)
    trainer.load_state_dict(
        {k: payload[k] for k in ("control", "round", "energy_calls", "wall_seconds", "history")}
        | {"optimizer": trainer.optimizer.state_dict(), "generator": trainer.generator.get_state()}
    )
    return trainer, trained


def _energies(system: str, x: np.ndarray) -> np.ndarray:
    energy = build_energy(system)
    return energy.energy(torch.from_numpy(x).view(x.shape[0], energy.num_particles, energy.dim)).numpy()


def _distances(system: str, x: np.ndarray) -> np.ndarray:
    from energy.synthetic import pairwise_distances

    energy = build_energy(system)
    return pairwise_distances(torch.from_numpy(x).view(x.shape[0], energy.num_particles, energy.dim)).numpy().ravel()


def run(
    *,
    systems: list[str],
    seeds: list[int],
    data_dir: Path,
    out_dir: Path,
    minutes: float | None,
    rounds: int | None,
    num_samples: int = 2000,
    eval_steps: int | None = None,
    command: str = "",
    threads: int | None = None,
    evaluate_only: bool = False,
    train_steps: int | None = None,
    layers: int | None = None,
    hidden: int | None = None,
    samples_per_round: int | None = None,
    buffer_capacity: int | None = None,
) -> dict[str, Any]:
    """Train and score every (system, seed); results for other (system, seed) pairs already in ``out_dir``
    are kept, so seeds and systems can run as processes side by side. ``None`` keeps the preset's value."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"command": command, "versions": versions(), "runs": [], "floors": {}}
    if threads is not None:
        torch.set_num_threads(threads)
    for system in systems:
        results["floors"][system] = reference_floor(system, data_dir, num_samples)
        log.info("%s reference-vs-reference floor: %s", system, results["floors"][system])
        config = PRESETS[system]
        if minutes is not None:
            config = replace(config, max_minutes=minutes)
        if rounds is not None:
            config = replace(config, max_rounds=rounds)
        if train_steps is not None:
            config = replace(config, train_grid=replace(config.train_grid, num_steps=train_steps))
        if layers is not None or hidden is not None:
            network = config.network
            config = replace(
                config,
                network=replace(
                    network,
                    num_layers=network.num_layers if layers is None else layers,
                    hidden=network.hidden if hidden is None else hidden,
                ),
            )
        if samples_per_round is not None:
            config = replace(config, trainer=replace(config.trainer, samples_per_round=samples_per_round))
        if buffer_capacity is not None:
            config = replace(config, buffer_capacity=buffer_capacity)
        grid = config.eval_grid if eval_steps is None else replace(config.eval_grid, num_steps=eval_steps)
        for seed in seeds:
            checkpoint = out_dir / "checkpoints" / f"{system}_seed{seed}.pt"
            if evaluate_only:
                trainer, config = _load_trainer(config, checkpoint, seed)
            else:
                trainer = train_synthetic(config, seed=seed, out=checkpoint)
            t0 = time.perf_counter()
            gen = generate(trainer.control, config, num_samples, grid, seed=10_000 + seed)
            sample_seconds = time.perf_counter() - t0
            ref = reference_samples(system, data_dir, num_samples, seed)
            dim = build_energy(system).dim
            e_gen, e_ref = _energies(system, gen), _energies(system, ref)
            finite = np.isfinite(e_gen)
            row = {
                "system": system,
                "seed": seed,
                "x_w2": x_w2_aligned(gen, ref, dim, progress=True),
                "x_w2_plain": x_w2(gen, ref, dim),
                "e_w2": e_w2(np.where(finite, e_gen, np.nanmax(e_gen[finite], initial=0.0)), e_ref),
                "mean_energy": float(np.mean(e_gen[finite])),
                "reference_mean_energy": float(np.mean(e_ref)),
                "rounds": trainer.round,
                "energy_calls": trainer.energy_calls,
                "train_seconds": trainer.wall_seconds,
                "refresh_seconds": sum(h.refresh_seconds for h in trainer.history),
                "gradient_seconds": sum(h.gradient_seconds for h in trainer.history),
                "sample_seconds": sample_seconds,
                "eval_grid": dataclasses.asdict(grid),
                "config": config.to_dict(),
                "loss_curve": [h.loss for h in trainer.history],
                "command": command,
            }
            log.info(
                "%s seed %d: x-W2 %.3f  E-W2 %.3f  (%d rounds, %.0f s)",
                system,
                seed,
                row["x_w2"],
                row["e_w2"],
                row["rounds"],
                row["train_seconds"],
            )
            results["runs"].append(row)
            np.save(out_dir / f"{system}_seed{seed}_samples.npy", gen.astype(np.float32))
            _plot(system, seed, gen, ref, e_gen, e_ref, out_dir)
            write_results(results, out_dir)
    return write_results(results, out_dir)


def _plot(
    system: str, seed: int, gen: np.ndarray, ref: np.ndarray, e_gen: np.ndarray, e_ref: np.ndarray, out_dir: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    lo, hi = np.percentile(e_ref, [0.5, 99.5])
    span = hi - lo
    bins = np.linspace(lo - 0.2 * span, hi + 0.2 * span, 80)
    axes[0].hist(e_ref, bins=bins, alpha=0.5, density=True, label="reference (MCMC)")
    axes[0].hist(np.clip(e_gen, bins[0], bins[-1]), bins=bins, alpha=0.5, density=True, label="Adjoint Sampling")
    axes[0].set_xlabel("energy")
    axes[0].legend()
    d_gen, d_ref = _distances(system, gen), _distances(system, ref)
    dbins = np.linspace(0, np.percentile(d_ref, 99.9) * 1.1, 80)
    axes[1].hist(d_ref, bins=dbins, alpha=0.5, density=True, label="reference (MCMC)")
    axes[1].hist(np.clip(d_gen, 0, dbins[-1]), bins=dbins, alpha=0.5, density=True, label="Adjoint Sampling")
    axes[1].set_xlabel("interatomic distance")
    axes[1].legend()
    fig.suptitle(f"{system.upper()} seed {seed}")
    fig.tight_layout()
    fig.savefig(out_dir / f"{system}_seed{seed}.png", dpi=90)
    plt.close(fig)
