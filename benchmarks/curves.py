"""Training curves (RAM loss and mean energy of the fresh samples per round) from checkpoints.

Synthetic runs: one figure per system (``dw4_training.png``, ``lj13_training.png``). Conformer-sampler
runs: ``conformers_training.png`` with the bridge-matching warm-up loss and, once RAM rounds exist, the
RAM loss, the mean energy and the valid fraction of the fresh samples.

Reproduce: ``python -m benchmarks.curves benchmarks/results/checkpoints/*.pt --out benchmarks/results``
(and ``python -m benchmarks.curves checkpoints/conformers.pt``)
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np

from sampler.networks import describe_network, network_from_dict
from training.checkpoint import load_checkpoint

__all__ = ["main", "plot_curves"]

log = logging.getLogger(__name__)

REFERENCE_MEAN_ENERGY = {"dw4": -22.37, "lj13": -43.23}  # of the 2000 test samples the benchmark scores against


def plot_curves(checkpoints: list[Path], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_system: dict[str, list[tuple[str, list[dict[str, float]]]]] = {}
    written = []
    for path in checkpoints:
        payload = load_checkpoint(path)
        if payload.get("kind") == "conformers":
            written.append(plot_conformer_curves(payload, out / "conformers_training.png"))
            continue
        system = payload["config"]["system"]
        by_system.setdefault(system, []).append((f"seed {payload['extra'].get('seed', '?')}", payload["history"]))
    for system, runs in by_system.items():
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for label, history in runs:
            rounds = np.array([h["round"] for h in history])
            axes[0].semilogy(rounds, [h["loss"] for h in history], label=label, lw=0.8)
            energy = np.array([h["mean_energy"] for h in history])
            axes[1].plot(rounds, np.clip(energy, None, np.nanpercentile(energy, 90)), label=label, lw=0.8)
        axes[1].axhline(REFERENCE_MEAN_ENERGY[system], color="k", ls="--", lw=1, label="reference mean")
        axes[0].set_xlabel("round")
        axes[0].set_ylabel("RAM loss")
        axes[1].set_xlabel("round")
        axes[1].set_ylabel("mean E, fresh samples (clipped)")
        axes[1].legend()
        fig.suptitle(f"{system.upper()} training curves")
        fig.tight_layout()
        path = out / f"{system}_training.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def _warmup_losses(extra: dict[str, Any]) -> list[float]:
    """Warm-up losses of this run, after those of the runs it was initialised from (``--init-from``)."""
    earlier = (extra.get("init_from") or {}).get("extra") or {}
    return (_warmup_losses(earlier) if earlier else []) + list(extra.get("warmup_loss") or [])


def plot_conformer_curves(payload: dict[str, Any], path: Path) -> Path:
    """Warm-up loss per 50-step chunk (normalized bridge matching) and the RAM rounds, if any."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    warmup = _warmup_losses(payload.get("extra") or {})
    history = payload.get("history") or []
    panels = 1 + (3 if history else 0)
    fig, axes = plt.subplots(1, panels, figsize=(4.8 * panels, 4.0), squeeze=False)
    ax = axes[0][0]
    chunk = 50
    steps = chunk * (np.arange(len(warmup)) + 1)
    ax.semilogy(steps, warmup, lw=0.6, alpha=0.5, label="per 50 steps")
    if len(warmup) >= 10:
        smooth = np.convolve(warmup, np.ones(10) / 10, mode="valid")
        ax.semilogy(steps[9:], smooth, lw=1.2, label="running mean of 10")
    ax.set_xlabel("warm-up step")
    ax.set_ylabel("bridge-matching loss")
    ax.set_title("warm-up on ETKDG conformers")
    ax.legend()
    if history:
        rounds = np.array([h["round"] for h in history])
        for ax, key, label in zip(
            axes[0][1:],
            ("loss", "mean_energy", "valid_fraction"),
            ("RAM loss", "mean E of fresh samples, eV", "fraction the energy model accepted"),
            strict=True,
        ):
            values = np.array([h[key] for h in history], dtype=float)
            ax.plot(rounds, values, lw=0.8)
            if key == "mean_energy":  # a round with one broken sample reaches 1e7 eV: a log scale shows both
                ax.set_yscale("symlog", linthresh=10.0)
            ax.set_xlabel("RAM round")
            ax.set_ylabel(label)
    config = payload["config"]
    net = describe_network(network_from_dict(config["network"]))
    fig.suptitle(
        f"conformer sampler: {net},\n{config['num_molecules']} training molecules, energy {config['energy_model']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("checkpoints", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    for path in plot_curves(args.checkpoints, args.out):
        log.info("wrote %s", path)


if __name__ == "__main__":
    main()
