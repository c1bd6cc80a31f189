"""What one training round costs on this machine, at our preset and at the published settings.

A round (ALGORITHM.md section 5) is a buffer refresh, ``M`` controlled samples integrated over ``N`` time
steps and scored once, then ``K`` Adam steps of the RAM loss on buffer batches. The published synthetic
settings (ALGORITHM.md section 8: EGNN 5 layers x 128, ``M = 1000``, ``K = 100``, ``N = 200`` for DW-4 and
1000 for LJ-13) were run on GPUs; this benchmark measures what a round of them costs on this CPU, so the
30-minute budget of the synthetic benchmark can be read in rounds.

Measured, not guessed: the refresh is timed with the full ``M`` samples at two short step counts ``p``
and ``2p`` (every step of a uniform grid costs the same: one control-network forward on ``M`` systems),
which separates the per-step cost from the once-per-refresh cost (energies, adjoint targets, buffer
push); ``k`` gradient steps are timed on a buffer filled by that refresh. The round is
``once + N * per_step + K * per_gradient_step``. The preset's projection is checked against the round time
its real training runs recorded in ``benchmarks/results/synthetic.json``.

Batch size per gradient step is not among the published settings; the preset's is used for both (the
gradient cost scales with it).

Reproduce: ``python -m benchmarks.round_cost --systems lj13 dw4``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sampler.egnn import EGNNConfig
from training.checkpoint import versions
from training.synthetic import PRESETS, SyntheticRunConfig, build_trainer

__all__ = ["RoundCost", "measure", "project", "published_settings"]

log = logging.getLogger(__name__)

RESULTS = Path(__file__).parent / "results"
BUDGET_S = 30 * 60.0
PUBLISHED_STEPS = {"dw4": 200, "lj13": 1000}


def published_settings(system: str) -> SyntheticRunConfig:
    """The preset with the published network, samples per round, gradient steps and time steps."""
    preset = PRESETS[system]
    return dataclasses.replace(
        preset,
        network=EGNNConfig(node_features=1, num_layers=5, hidden=128),
        trainer=dataclasses.replace(preset.trainer, samples_per_round=1000, grad_steps_per_round=100),
        train_grid=dataclasses.replace(preset.train_grid, num_steps=PUBLISHED_STEPS[system]),
        buffer_capacity=10_000,
    )


@dataclass(frozen=True)
class RoundCost:
    """Measured pieces of one round and the projection built from them (seconds)."""

    system: str
    settings: str
    layers: int
    hidden: int
    samples: int
    steps: int
    grad_steps: int
    batch_size: int
    probe_steps: int
    refresh_probe_s: tuple[float, float]
    per_step_s: float
    once_s: float
    per_gradient_step_s: float
    round_s: float
    rounds_in_budget: float


def project(
    refresh_p: float, refresh_2p: float, probe_steps: int, per_gradient_step: float, steps: int, grad_steps: int
) -> tuple[float, float, float]:
    """``(per_step, once, round)`` from refresh times at ``p`` and ``2p`` steps and the gradient step time."""
    per_step = max(refresh_2p - refresh_p, 0.0) / probe_steps
    once = max(refresh_p - probe_steps * per_step, 0.0)
    return per_step, once, once + steps * per_step + grad_steps * per_gradient_step


def measure(
    config: SyntheticRunConfig, settings: str, *, probe_steps: int, gradient_probe: int, seed: int = 0
) -> RoundCost:
    """Time a refresh of the config's ``M`` samples at ``probe_steps`` and ``2 * probe_steps`` steps, and
    ``gradient_probe`` RAM gradient steps, with the config's (untrained) network."""
    m = config.trainer.samples_per_round
    times = []
    trainer = None
    for p in (probe_steps, 2 * probe_steps):
        probe = dataclasses.replace(config, train_grid=dataclasses.replace(config.train_grid, num_steps=p))
        trainer = build_trainer(probe, seed)
        trainer.refresh(config.trainer.initial_samples, controlled=False)  # a base-process buffer, as in round 1
        trainer.refresh(8)  # warm-up: the first controlled call pays one-time allocations
        t0 = time.perf_counter()
        trainer.refresh(m)
        times.append(time.perf_counter() - t0)
        log.info("%s %s: refresh of %d samples over %d steps: %.2f s", config.system, settings, m, p, times[-1])
    assert trainer is not None
    trainer.gradient_steps(1)  # first step allocates
    t0 = time.perf_counter()
    trainer.gradient_steps(gradient_probe)
    per_grad = (time.perf_counter() - t0) / gradient_probe
    log.info("%s %s: %.3f s per gradient step (batch %d)", config.system, settings, per_grad, config.trainer.batch_size)
    steps, k = config.train_grid.num_steps, config.trainer.grad_steps_per_round
    per_step, once, round_s = project(times[0], times[1], probe_steps, per_grad, steps, k)
    return RoundCost(
        system=config.system,
        settings=settings,
        layers=config.network.num_layers,
        hidden=config.network.hidden,
        samples=m,
        steps=steps,
        grad_steps=k,
        batch_size=config.trainer.batch_size,
        probe_steps=probe_steps,
        refresh_probe_s=(times[0], times[1]),
        per_step_s=per_step,
        once_s=once,
        per_gradient_step_s=per_grad,
        round_s=round_s,
        rounds_in_budget=BUDGET_S / round_s,
    )


def observed_round_seconds(system: str, synthetic_json: Path) -> float | None:
    """Mean wall seconds per round of the committed training runs of ``system`` (``None`` if none)."""
    if not synthetic_json.is_file():
        return None
    runs = [r for r in json.loads(synthetic_json.read_text()).get("runs", []) if r["system"] == system]
    if not runs:
        return None
    return sum(r["train_seconds"] for r in runs) / sum(r["rounds"] for r in runs)


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Cost of one training round on this machine",
        "",
        f"Reproduce: `{results['command']}`",
        "",
        (__doc__ or "").split("\n\n")[1].replace("\n", " "),
        "",
        f"One torch thread; run {results['date']}; budget {BUDGET_S / 60:.0f} min per seed.",
        "",
        "| system | settings | EGNN | M | N | K | batch | refresh, p / 2p steps | per step | once | per gradient step "
        "| **round** | rounds in 30 min | observed s/round (synthetic.json) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        observed = r.get("observed_round_s")
        seen = "–" if observed is None else f"{observed:.2f} s ({observed / r['round_s']:.1f}x projected)"
        lines.append(
            f"| {r['system']} | {r['settings']} | {r['layers']}x{r['hidden']} | {r['samples']} | {r['steps']} | "
            f"{r['grad_steps']} | {r['batch_size']} | "
            f"{r['refresh_probe_s'][0]:.2f} s / {r['refresh_probe_s'][1]:.2f} s (p = {r['probe_steps']}) | "
            f"{r['per_step_s'] * 1e3:.1f} ms | {r['once_s']:.2f} s | "
            f"{r['per_gradient_step_s'] * 1e3:.0f} ms | **{_duration(r['round_s'])}** | {r['rounds_in_budget']:.1f} | "
            f"{seen} |"
        )
    lines += [
        "",
        "The projection leaves out what a real run adds (checkpoints, logging, a second process on the other core, "
        "a network that changes as it learns); the last column compares it with the real runs' mean wall time per "
        "round, so it reads as a lower bound.",
        "",
        f"Versions: {results['versions']}",
        "",
    ]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.round_cost", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--systems", nargs="+", choices=sorted(PRESETS), default=["lj13", "dw4"])
    parser.add_argument("--settings", nargs="+", choices=["preset", "published"], default=["preset", "published"])
    parser.add_argument("--probe-steps", type=int, default=10, help="p: the refresh is timed at p and 2p steps")
    parser.add_argument("--gradient-probe", type=int, default=10, help="gradient steps timed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.probe_steps < 1 or args.gradient_probe < 1:
        parser.error("--probe-steps and --gradient-probe must be >= 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("sampler.trainer").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    command = " ".join(["python -m benchmarks.round_cost", *(shlex.quote(a) for a in argv)])
    rows = []
    for system in args.systems:
        for settings in args.settings:
            config = PRESETS[system] if settings == "preset" else published_settings(system)
            row = dataclasses.asdict(
                measure(config, settings, probe_steps=args.probe_steps, gradient_probe=args.gradient_probe)
            )
            if settings == "preset":
                row["observed_round_s"] = observed_round_seconds(system, args.out_dir / "synthetic.json")
            rows.append(row)
            log.info(
                "%s %s: %.1f s per round, %.1f rounds in 30 min",
                system,
                settings,
                row["round_s"],
                row["rounds_in_budget"],
            )
    results = {
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "versions": versions(),
        "rows": rows,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "round_cost.json").write_text(json.dumps(results, indent=1))
    (args.out_dir / "round_cost.md").write_text(markdown(results))
    log.info("wrote %s; reproduce with: %s", args.out_dir / "round_cost.md", command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
