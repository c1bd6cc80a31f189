"""Training curves (RAM loss and mean energy of the fresh samples per round) from checkpoints.

Reproduce: ``python -m benchmarks.curves benchmarks/results/checkpoints/*.pt --out benchmarks/results``
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from service.checkpoint import load_checkpoint

__all__ = ["main", "plot_curves"]

log = logging.getLogger(__name__)

REFERENCE_MEAN_ENERGY = {"dw4": -22.37, "lj13": -43.23}  # of the 2000 test samples the benchmark scores against


def plot_curves(checkpoints: list[Path], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_system: dict[str, list[tuple[str, list[dict[str, float]]]]] = {}
    for path in checkpoints:
        payload = load_checkpoint(path)
        system = payload["config"]["system"]
        by_system.setdefault(system, []).append((f"seed {payload['extra'].get('seed', '?')}", payload["history"]))
    written = []
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
