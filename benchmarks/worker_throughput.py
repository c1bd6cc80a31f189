"""Training rounds of the torsional conformer model, in one process against through Redis with 1 and 2 energy workers:
rounds per hour, energy evaluations per second, and where a round's time goes.

All three in the same run, on the same molecules and configuration (the shipped model's training round, a handful
of small SPICE training molecules), for MMFF94 (the product's training energy) and GFN2-xTB (an expensive one):

- **in process** (``train-torsional``'s loop): sample the round's conformers, evaluate their energies and torsion
  targets, push them into the in-memory buffer, take the gradient steps, write a checkpoint;
- **Redis, 1 and 2 workers** (``worker train --config torsional``'s loop,
  :class:`training.torsional_worker.TorsionalRedisRounds`, in this process): sample and post the evaluation jobs,
  wait for ``worker energy --model mmff`` (or ``xtb``) processes (started here, one torch thread each) to evaluate
  them and push into the Redis buffer, take the gradient steps (drawing from Redis), write and publish a
  checkpoint.

A checkpoint is written every round (the worst case; a run checkpoints every ``N`` rounds). The three modes' rounds
are interleaved (one round of each in turn, the order rotating), so a change in the load of this shared machine
falls on all three alike; the first round of each mode is not counted (the workers start, each molecule is parsed
once). Energy evaluations per second are the samples a round evaluates over the round's wall time (what training
consumes) and over the time spent getting them (in process: the energy model plus torques and targets; through
Redis: the wait for the workers).

Reproduce: ``python -m benchmarks.worker_throughput`` (about 4 minutes on two cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import torch

from buffer.connection import RedisSettings, connect
from buffer.jobs import EvaluationQueue
from buffer.keys import RedisKeys
from buffer.published import publish_checkpoint
from buffer.redis import ResidentRedisReplayBuffer
from buffer.redis_server import EmbeddedRedis, EmbeddedRedisConfig
from energy.registry import build_energy_model
from molecules.dataset import MoleculeFilter
from training.checkpoint import file_sha256, save_checkpoint, versions
from training.energy_worker import DelayedEnergy, energy_stream_name
from training.paths import DEFAULT_DATA, RESULTS_DIR
from training.torsional_training import (
    CHECKPOINT_KIND,
    MoleculeSystems,
    TorsionalRunConfig,
    TorsionalTrainer,
    build_molecules,
    config_to_dict,
)
from training.torsional_worker import TorsionalRedisRounds, _RemoteEnergy
from training.trainer_worker import TrainerWorkerConfig

__all__ = ["InProcess", "ThroughRedis", "bench_config", "measure_redis", "run", "summarize"]

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
PHASES = ("sample_s", "energy_s", "gradient_s", "checkpoint_s")


def bench_config(*, energy_model: str = "mmff", molecules: int = 10) -> TorsionalRunConfig:
    """The shipped model's training run (network, temperature, integration steps, 16 molecules x 8 copies and 40
    gradient steps of 32 a round) on a handful of small SPICE training molecules."""
    base = TorsionalRunConfig()
    return dataclasses.replace(
        base,
        energy_model=energy_model,
        tau_ev=0.1,
        num_molecules=molecules,
        selection=MoleculeFilter(max_atoms=30, max_heavy_atoms=14),
        num_seeds=2,
        network=dataclasses.replace(base.network, num_layers=2, hidden=32),
        sde_steps=20,
        molecules_per_round=16,
        copies=8,
        gradient_steps=40,
        batch_size=32,
        warmup_steps=0,
    )


def _round(phases: dict[str, float], samples: int) -> dict[str, float]:
    total = sum(phases[k] for k in PHASES)
    return {**phases, "round_s": total, "samples": float(samples)}


class InProcess:
    """``train-torsional``'s loop: sample, evaluate in this process, push, step, checkpoint."""

    def __init__(self, config: TorsionalRunConfig, molecules: list[MoleculeSystems], *, out: Path, cost_ms: float):
        self.energy: Any = build_energy_model(config.energy_model)
        if cost_ms > 0:
            self.energy = DelayedEnergy(self.energy, cost_ms / 1000.0)
        self.trainer = TorsionalTrainer(config, molecules, self.energy, seed=0)
        self.config = config
        self.out = out

    def round(self) -> dict[str, float]:
        t, c = self.trainer, self.config
        start = time.perf_counter()
        drawn = torch.randint(len(t.systems), (c.molecules_per_round,), generator=t.generator)
        batch, phi = t.sample(drawn.repeat_interleave(c.copies).tolist())
        sampled = time.perf_counter()
        samples = t.evaluate(batch, phi)
        t.buffer.push(samples.to_replay())
        evaluated = time.perf_counter()
        for _ in range(c.gradient_steps):
            t.ram_step()
        t.round += 1
        stepped = time.perf_counter()
        save_checkpoint(self.out, t, config_to_dict(c), kind=CHECKPOINT_KIND)
        end = time.perf_counter()
        phases = {
            "sample_s": sampled - start,
            "energy_s": evaluated - sampled,
            "gradient_s": stepped - evaluated,
            "checkpoint_s": end - stepped,
        }
        return _round(phases, c.molecules_per_round * c.copies)

    def close(self) -> None:
        close = getattr(getattr(self.energy, "model", self.energy), "close", None)  # xtb's worker process
        if callable(close):
            close()


def _start_workers(
    count: int, model: str, url: str, prefix: str, cost_ms: float, logs: Path
) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = []
    for k in range(count):
        command = [
            sys.executable, "-m", "cli.main", "worker", "energy", "--model", model, "--redis-url", url,
            "--redis-prefix", prefix, "--threads", "1", "--consumer", f"w{k}",
        ]  # fmt: skip
        if cost_ms > 0:
            command += ["--artificial-cost-ms", str(cost_ms)]
        with open(logs / f"{prefix}-worker{k}.log", "ab") as f:
            procs.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT))
    return procs


class ThroughRedis:
    """``worker train --config torsional``'s loop in this process, with ``workers`` ``worker energy`` processes
    (on their own key prefix): sample and post, wait, step on the Redis buffer, checkpoint and publish."""

    def __init__(
        self,
        config: TorsionalRunConfig,
        molecules: list[MoleculeSystems],
        *,
        workers: int,
        url: str,
        out: Path,
        cost_ms: float,
    ) -> None:
        self.prefix = f"bench{uuid.uuid4().hex[:8]}"
        self.keys = RedisKeys(self.prefix)
        self.client = connect(RedisSettings(url=url))
        self.trainer = TorsionalTrainer(config, molecules, _RemoteEnergy(config.energy_model), seed=0)
        self.trainer.buffer = ResidentRedisReplayBuffer(  # type: ignore[assignment]
            self.client, capacity=config.buffer_size, name="bench", keys=self.keys
        )
        queue = EvaluationQueue(self.client, model=energy_stream_name(config.energy_model), keys=self.keys)
        worker = TrainerWorkerConfig(run="bench", job_size=16, poll_interval_s=0.01, wait_timeout_s=600)
        self.rounds = TorsionalRedisRounds(self.trainer, queue, worker, job_prefix=f"bench:{self.prefix}")
        self.config = config
        self.out = out
        self.procs = _start_workers(workers, config.energy_model, url, self.prefix, cost_ms, out.parent)

    def round(self) -> dict[str, float]:
        t, c = self.trainer, self.config
        stats = self.rounds.run_round()
        start = time.perf_counter()
        save_checkpoint(self.out, t, config_to_dict(c), kind=CHECKPOINT_KIND)
        sha = file_sha256(self.out)
        publish_checkpoint(self.client, run="bench", path=str(self.out), round=t.round, sha256=sha, keys=self.keys)
        phases = {
            "sample_s": stats["post_seconds"],
            "energy_s": stats["wait_seconds"],
            "gradient_s": stats["gradient_seconds"],
            "checkpoint_s": time.perf_counter() - start,
        }
        return _round(phases, c.molecules_per_round * c.copies)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def measure_redis(
    config: TorsionalRunConfig,
    molecules: list[MoleculeSystems],
    *,
    rounds: int,
    workers: int,
    url: str,
    out: Path,
    cost_ms: float,
) -> list[dict[str, float]]:
    """``rounds + 1`` rounds through Redis with ``workers`` energy-worker processes (the first not returned)."""
    mode = ThroughRedis(config, molecules, workers=workers, url=url, out=out, cost_ms=cost_ms)
    try:
        return [mode.round() for _ in range(rounds + 1)][1:]
    finally:
        mode.close()


def summarize(rounds: list[dict[str, float]]) -> dict[str, Any]:
    """Medians per phase and round (and the rounds themselves); rounds per hour and evaluations per second from
    the medians."""
    med = {k: statistics.median(r[k] for r in rounds) for k in (*PHASES, "round_s")}
    samples = rounds[0]["samples"]
    return {
        **med,
        "round_s_min": min(r["round_s"] for r in rounds),
        "round_s_max": max(r["round_s"] for r in rounds),
        "rounds": rounds,
        "rounds_per_hour": 3600.0 / med["round_s"],
        "evals_per_s_round": samples / med["round_s"],
        "evals_per_s_energy": samples / med["energy_s"],
        "samples_per_round": samples,
    }


def measure_model(
    energy_model: str, *, rounds: int, molecules: int, cost_ms: float, url: str, tmp: Path, loads: list[float]
) -> dict[str, Any]:
    """The three modes for one energy model, their rounds interleaved (one round of each in turn, the order
    rotating), so a change in the machine's load falls on all three alike."""
    config = bench_config(energy_model=energy_model, molecules=molecules)
    built, _ = build_molecules(config, DEFAULT_DATA, seed=0, show_progress=False)
    modes: dict[str, InProcess | ThroughRedis] = {
        "in process": InProcess(config, built, out=tmp / f"{energy_model}-inproc.pt", cost_ms=cost_ms)
    }
    try:
        for workers in (1, 2):
            label = f"Redis, {workers} energy worker{'s' if workers > 1 else ''}"
            out = tmp / f"{energy_model}-redis{workers}.pt"
            modes[label] = ThroughRedis(config, built, workers=workers, url=url, out=out, cost_ms=cost_ms)
        for mode in modes.values():
            mode.round()  # not counted: the workers start, each molecule is parsed once
        timed: dict[str, list[dict[str, float]]] = {label: [] for label in modes}
        labels = list(modes)
        for r in range(rounds):
            for label in labels[r % 3 :] + labels[: r % 3]:
                timed[label].append(modes[label].round())
            loads.append(os.getloadavg()[0])
            log.info("%s: %d of %d rounds of each mode", energy_model, r + 1, rounds)
    finally:
        for mode in modes.values():
            mode.close()
    atoms = [m.mol.GetNumAtoms() for m in built]
    torsions = [m.systems[0].num_torsions for m in built]
    return {
        "config": config_to_dict(config),
        "molecules": len(built),
        "atoms": [min(atoms), max(atoms)],
        "torsions": [min(torsions), max(torsions)],
        "modes": {label: summarize(rounds_) for label, rounds_ in timed.items()},
    }


def run(
    *, energy_models: list[str], rounds: int, molecules: int, cost_ms: float, out_dir: Path, command: str
) -> dict[str, Any]:
    """Measure the three modes for each energy model in one run; write ``worker_throughput.{json,md}``."""
    torch.set_num_threads(1)
    started = time.monotonic()
    loads = [os.getloadavg()[0]]
    models: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="asw-bench-", dir="/tmp") as tmp:
        server = EmbeddedRedis(EmbeddedRedisConfig(data_dir=Path(tmp) / "redis"))
        url = server.start()
        try:
            for name in energy_models:
                models[name] = measure_model(
                    name, rounds=rounds, molecules=molecules, cost_ms=cost_ms, url=url, tmp=Path(tmp), loads=loads
                )
        finally:
            server.stop()
    result = {
        "command": command,
        "rounds_measured": rounds,
        "artificial_cost_ms": cost_ms,
        "models": models,
        "wall_s": time.monotonic() - started,
        "machine": {"cpus": os.cpu_count(), "load_1min": loads, **versions()},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "worker_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "worker_throughput.md").write_text(markdown(result))
    return result


ENERGY_NAMES = {"mmff": "MMFF94", "xtb": "GFN2-xTB"}


def markdown(r: dict[str, Any]) -> str:
    first = next(iter(r["models"].values()))
    c = first["config"]
    samples = c["molecules_per_round"] * c["copies"]
    cost = (
        f", plus an artificial {r['artificial_cost_ms']:g} ms per structure (sleep)" if r["artificial_cost_ms"] else ""
    )
    names = ", ".join(ENERGY_NAMES.get(m, m) for m in r["models"])
    lines = [
        "# Torsional conformer training: in process vs. through Redis with 1 and 2 energy workers",
        "",
        "```bash",
        r["command"],
        "```",
        "",
        f"{first['molecules']} small SPICE training molecules ({first['atoms'][0]}–{first['atoms'][1]} atoms with "
        f"hydrogens, {first['torsions'][0]}–{first['torsions'][1]} rotatable torsions); energies {names}{cost}; the "
        f"shipped model's training round: its network ({c['network']['num_layers']} layers × "
        f"{c['network']['hidden']}), {c['sde_steps']} integration steps, {c['molecules_per_round']} molecules × "
        f"{c['copies']} copies = {samples} fresh samples and {c['gradient_steps']} gradient steps of "
        f"{c['batch_size']}, a checkpoint every round. Medians over {r['rounds_measured']} rounds per mode, the three "
        "modes' rounds interleaved (the first round of each not counted), one torch thread in the trainer and in each "
        "worker; the whole run took "
        f"{r['wall_s'] / 60:.1f} min.",
        "",
        "| energy | mode | rounds/h | energy evals/s (round) | evals/s (while evaluating) | round s [min–max] | "
        "sampling s | energies s | gradient steps s | checkpoint s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, m in r["models"].items():
        for label, v in m["modes"].items():
            lines.append(
                f"| {ENERGY_NAMES.get(model, model)} | {label} | {v['rounds_per_hour']:.0f} | "
                f"{v['evals_per_s_round']:.1f} | {v['evals_per_s_energy']:.0f} | {v['round_s']:.2f} "
                f"[{v['round_s_min']:.2f}–{v['round_s_max']:.2f}] | "
                f"{v['sample_s']:.2f} | {v['energy_s']:.2f} | {v['gradient_s']:.2f} | {v['checkpoint_s']:.3f} |"
            )
    lines += [
        "",
        "Columns: *energy evals/s (round)* is the samples a round evaluates over the round's wall time (what training "
        "consumes); *while evaluating* over the *energies* column. *Sampling* is the batched torus integration of the "
        "round's samples (through Redis: plus encoding and posting the jobs); *energies* is the energy model with the "
        "torsion targets in process, and through Redis the wait until the workers have evaluated every job and pushed "
        "the entries into Redis; *gradient steps* draw from the in-memory or the Redis buffer; *checkpoint* writes "
        "the file (through Redis: and publishes it).",
        "",
    ]
    for model, m in r["models"].items():
        modes = m["modes"]
        base, one, two = modes["in process"], modes["Redis, 1 energy worker"], modes["Redis, 2 energy workers"]
        share = {k: 100 * one[k] / one["round_s"] for k in PHASES}
        name = ENERGY_NAMES.get(model, model)
        lines.append(
            f"- {name}: through Redis a round takes {one['round_s'] - base['round_s']:+.2f} s "
            f"({100 * (one['round_s'] / base['round_s'] - 1):+.0f} %) with one worker and "
            f"{two['round_s'] - base['round_s']:+.2f} s ({100 * (two['round_s'] / base['round_s'] - 1):+.0f} %) with "
            f"two; the energies take {one['energy_s']:.2f} s with one worker, {two['energy_s']:.2f} s with two "
            f"({one['energy_s'] / two['energy_s']:.2f}×), against {base['energy_s']:.2f} s in process; the gradient "
            f"steps {one['gradient_s'] - base['gradient_s']:+.2f} s (drawing from Redis, one worker). With one "
            f"worker the round goes {share['sample_s']:.0f} % to sampling, {share['energy_s']:.0f} % to waiting for "
            f"energies, {share['gradient_s']:.0f} % to gradient steps, {share['checkpoint_s']:.1f} % to the "
            "checkpoint."
        )
    loads = r["machine"]["load_1min"]
    lines += [
        "",
        f"Machine: {r['machine']['cpus']} cores, shared with other work (1-min load average {min(loads):.1f}–"
        f"{max(loads):.1f} during the run); torch {r['machine']['torch']}. Round times vary by the spread shown "
        "between rounds of one mode, so differences between modes within that spread are noise, not Redis. "
        "**Two cores limit what a second worker can gain**: the trainer only polls while it waits, but the workers, "
        "Redis and whatever else runs share the two cores, so with any other load two workers get little more than "
        "one core between them; a machine with a core per worker would cut the wait by up to the number of workers. "
        "Through Redis the trainer waits while the workers evaluate (no overlap: `--max-lag 0`, the published "
        "alternation). With MMFF94 the energies are a negligible share of a round (above), so neither Redis nor a "
        "second worker matters: the network's sampling and gradient steps are the cost. With GFN2-xTB they are a "
        "large share, and that share is what more workers (on more cores) cut.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--energy-models", nargs="+", default=["mmff", "xtb"], help="registry names")
    parser.add_argument("--rounds", type=int, default=6, help="rounds measured per mode (one more is run first)")
    parser.add_argument("--molecules", type=int, default=10, help="small SPICE training molecules (tried)")
    parser.add_argument(
        "--artificial-cost-ms", type=float, default=0.0, help="sleep per structure in the energy model (labelled)"
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = shlex.join(
        ["python", "-m", "benchmarks.worker_throughput", *(argv if argv is not None else sys.argv[1:])]
    )
    result = run(
        energy_models=args.energy_models, rounds=args.rounds, molecules=args.molecules,
        cost_ms=args.artificial_cost_ms, out_dir=args.out_dir, command=command,
    )  # fmt: skip
    sys.stdout.write(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
