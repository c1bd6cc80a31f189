"""Training curve of a torsional run: RAM loss and median energy of the fresh samples per round.

Reproduce: ``python -m benchmarks.torsional_curve runs/tors_a.pt --out benchmarks/results/torsional_training.png``
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from training.checkpoint import load_checkpoint
from training.torsional_training import CHECKPOINT_KIND

__all__ = ["main", "plot_torsional_curve"]

log = logging.getLogger(__name__)


def plot_torsional_curve(checkpoint: Path, out: Path, *, mark_round: int | None = None) -> Path:
    """Two panels (RAM loss, log scale; median MMFF energy of the fresh samples), ``mark_round`` drawn as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    payload = load_checkpoint(checkpoint)
    if payload.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{checkpoint} is a {payload.get('kind')!r} checkpoint, not {CHECKPOINT_KIND!r}")
    rounds = payload["history"]["rounds"]
    x = [r["round"] for r in rounds]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].semilogy(x, [r["loss"] for r in rounds])
    axes[0].set(xlabel="RAM round", ylabel="RAM loss", title="loss (after the bridge-matching warm-up)")
    axes[1].plot(x, [r["energy_median_ev"] for r in rounds])
    axes[1].set(xlabel="RAM round", ylabel="median energy of fresh samples (eV)", title="training energy")
    if mark_round is not None:
        for ax in axes:
            ax.axvline(mark_round, color="grey", ls="--", lw=1, label=f"shipped (round {mark_round})")
        axes[0].legend()
    cfg = payload["config"]
    fig.suptitle(
        f"torsional run: {cfg['energy_model']}, tau {cfg['tau_ev']} eV, {cfg['num_molecules']} molecules, "
        f"warm-up {payload['history']['warmup_done']} steps, {payload['wall_seconds'] / 60:.0f} min of RAM"
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/torsional_training.png"))
    p.add_argument("--mark-round", type=int, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    log.info("wrote %s", plot_torsional_curve(args.checkpoint, args.out, mark_round=args.mark_round))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
