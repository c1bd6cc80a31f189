"""The ``adjoint-sampling`` command line.

Subcommands: ``train`` (a synthetic Adjoint Sampling run), ``sample`` (draw samples from a
checkpoint), ``energy`` (energies of samples in a file, and the LJ convention check), ``serve`` (the
HTTP service), ``worker`` (Redis workers), ``bench`` (benchmarks). Run ``adjoint-sampling SUBCOMMAND --help`` for each.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

from cli.common import CliError, reproduce_command
from training.paths import DEFAULT_DATA, REPO_ROOT, SHIPPED_CONFORMER_CHECKPOINT, SHIPPED_SYNTHETIC_CHECKPOINT

__all__ = ["build_parser", "main"]

log = logging.getLogger("adjoint_sampling")

DEFAULT_CHECKPOINT = SHIPPED_SYNTHETIC_CHECKPOINT
DEFAULT_CONFORMER_CHECKPOINT = SHIPPED_CONFORMER_CHECKPOINT


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="adjoint-sampling",
        description=(
            "Adjoint Sampling: diffusion samplers trained from an energy alone (Havens et al., ICML 2025). "
            "Start with `adjoint-sampling sample 'CC(=O)Nc1ccc(O)cc1' -n 8` (conformers of a SMILES from the shipped "
            "torsional model; `sample` without a SMILES draws from the shipped DW-4 model) or `adjoint-sampling serve` "
            "(the HTTP API and web page)."
        ),
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser(
        "train",
        help="train a sampler on a synthetic system (dw4, lj13)",
        description="Train Adjoint Sampling (RAM + replay buffer) on DW-4 or LJ-13.",
    )
    t.add_argument("--system", choices=["dw4", "lj13"], required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", type=Path, required=True, help="checkpoint path (written every --checkpoint-every rounds)")
    t.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="stop after this many rounds (default: preset; the learning-rate schedule follows the preset)",
    )
    t.add_argument("--minutes", type=float, default=None, help="stop after this much training time (default: preset)")
    t.add_argument("--checkpoint-every", type=int, default=25, metavar="N")
    t.add_argument("--resume", type=Path, default=None, help="resume exactly from a checkpoint written by train")
    t.add_argument("--weights-only", action="store_true", help="strip optimizer/buffer state from the final file")

    s = sub.add_parser(
        "sample",
        help="conformers of a SMILES or of every molecule in a file (or samples of a synthetic model)",
        description=(
            "With a SMILES: sample K conformers with the conformer model, repair, check connectivity and stereo, "
            "optionally relax, score, remove near-duplicates, weight and write SDF/XYZ/JSON. With -i FILE: the "
            "same for every molecule of a .smi/.sdf/.csv file into one SDF or XYZ, with a report and a failures "
            "file. Without either: draw samples from a synthetic (DW-4/LJ-13) checkpoint."
        ),
    )
    s.add_argument("smiles", nargs="?", default=None, help="molecule, e.g. 'CC(=O)Nc1ccc(O)cc1'")
    s.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help=f"default: {DEFAULT_CONFORMER_CHECKPOINT} with a SMILES, {DEFAULT_CHECKPOINT} without",
    )
    s.add_argument(
        "-n", "--num-samples", "--num-conformers", type=int, default=None, help="default: 10 conformers / 1000 samples"
    )
    s.add_argument("--steps", type=int, default=None, help="integration steps (default: the checkpoint's eval grid)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument(
        "-o",
        "--out",
        type=Path,
        default=None,
        help="conformers: .sdf, .xyz (CREST layout) or .json, a batch .sdf or .xyz; synthetic: .npy or .xyz",
    )
    from cli.conformers import add_sample_arguments

    add_sample_arguments(s)

    e = sub.add_parser(
        "energy",
        help="energies (and relaxation) of conformers in an SDF/XYZ file, or of synthetic .npy samples",
        description=(
            "Molecules: per-conformer energies of an .sdf or .xyz (optionally .gz) file under an energy model, "
            "optionally relaxed and written out. Synthetic: energy statistics of .npy samples (--system)."
        ),
    )
    e.add_argument("file", type=Path, nargs="?", help=".sdf/.xyz[.gz] conformers, or .npy [n, particles*dim]")
    e.add_argument("--system", choices=["dw4", "lj13"], default=None, help="synthetic system of a .npy file")
    e.add_argument(
        "--check-convention",
        action="store_true",
        help="LJ only: run MALA from the file's samples under pair factors 1/2, 1, 2 and report drift",
    )
    from cli.energy import add_energy_arguments

    add_energy_arguments(e)

    from cli.conformers import add_train_parser

    add_train_parser(sub, DEFAULT_DATA, REPO_ROOT)
    from cli.torsional import add_train_torsional_parser

    add_train_torsional_parser(sub, DEFAULT_DATA)

    from cli.workers import add_bench_redis_parser, add_parsers

    add_parsers(sub)  # worker energy, worker train, worker sample, redis

    from cli.serve import add_serve_parser

    add_serve_parser(sub)

    x = sub.add_parser(
        "export",
        help="copy a checkpoint without optimizer/buffer state (small, for sampling)",
        description="Strip the resume state from a training checkpoint.",
    )
    x.add_argument("src", type=Path)
    x.add_argument("dst", type=Path)

    b = sub.add_parser("bench", help="benchmarks", description="Run a benchmark and write benchmarks/results/.")
    bsub = b.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    add_bench_redis_parser(bsub)
    from cli.serve import add_bench_service_parser

    add_bench_service_parser(bsub)
    from cli.bench_conformers import add_bench_conformers_parser

    add_bench_conformers_parser(bsub, DEFAULT_DATA, REPO_ROOT)
    from benchmarks.options import add_compare_arguments, add_energy_throughput_arguments

    add_energy_throughput_arguments(
        bsub.add_parser("energy", help="energy-model throughput: 1 vs 2 worker processes, calculator reuse vs fresh")
    )
    add_compare_arguments(
        bsub.add_parser(
            "compare",
            help="paired per-molecule comparison of methods in conformer-benchmark results (bootstrap CI)",
            description="Per molecule, method − baseline of COV-R and AMR-R over one or more conformers_<tag>.json "
            "files, with 95 % bootstrap intervals and better/equal/worse counts.",
        )
    )
    bs = bsub.add_parser("synthetic", help="DW-4 and LJ-13 x-W2 / E-W2 over seeds vs published rows")
    bs.add_argument("--systems", nargs="+", choices=["dw4", "lj13"], default=["dw4", "lj13"])
    bs.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    bs.add_argument("--minutes", type=float, default=None, help="training budget per seed (default: preset)")
    bs.add_argument("--rounds", type=int, default=None)
    bs.add_argument("--num-samples", type=int, default=2000)
    bs.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    bs.add_argument("--eval-steps", type=int, default=None, help="integration steps when scoring (default: preset)")
    bs.add_argument("--train-steps", type=int, default=None, help="integration steps in training (default: preset)")
    bs.add_argument("--layers", type=int, default=None, help="EGNN layers (default: preset)")
    bs.add_argument("--hidden", type=int, default=None, help="EGNN width (default: preset)")
    bs.add_argument(
        "--samples-per-round", type=int, default=None, help="fresh samples per buffer refresh (default: preset)"
    )
    bs.add_argument("--buffer", type=int, default=None, help="replay-buffer capacity (default: preset)")
    bs.add_argument(
        "--evaluate-only",
        action="store_true",
        help="re-score the checkpoints already in OUT_DIR/checkpoints instead of training",
    )
    bs.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    bs.add_argument("--out-dir", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    return p


def _write_samples(path: Path, x: object, dim: int) -> None:
    import numpy as np

    arr = np.asarray(x)
    if path.suffix == ".npy":
        np.save(path, arr)
    elif path.suffix == ".xyz":
        n = arr.shape[1] // dim
        with open(path, "w") as f:
            for i, row in enumerate(arr.reshape(arr.shape[0], n, dim)):
                f.write(f"{n}\nsample {i}\n")
                for p in row:
                    coords = list(p) + [0.0] * (3 - dim)
                    f.write("X " + " ".join(f"{c:.6f}" for c in coords) + "\n")
    else:
        raise CliError(f"cannot write {path}: use a .npy or .xyz file name")


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint; a missing, unreadable or foreign file is a user-facing error."""
    from training.checkpoint import load_checkpoint

    try:
        return load_checkpoint(path)
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from exc


def cmd_train(args: argparse.Namespace) -> None:
    from training.checkpoint import export_weights
    from training.synthetic import PRESETS
    from training.synthetic_training import train_synthetic

    if args.resume is not None:
        if "resume" not in _read_checkpoint(args.resume):
            raise CliError(f"{args.resume} holds weights only (written with --weights-only); it cannot be resumed")
    try:
        trainer = train_synthetic(
            PRESETS[args.system],
            seed=args.seed,
            out=args.out,
            resume=args.resume,
            checkpoint_every=args.checkpoint_every,
            max_rounds=args.rounds,
            max_minutes=args.minutes,
        )
    except ValueError as exc:  # configuration mismatch on resume, invalid budget
        raise CliError(str(exc)) from exc
    if args.weights_only:
        export_weights(args.out, args.out)
    log.info(
        "trained %d rounds, %d energy calls, %.0f s; checkpoint %s",
        trainer.round,
        trainer.energy_calls,
        trainer.wall_seconds,
        args.out,
    )


def cmd_sample(args: argparse.Namespace) -> None:
    if args.smiles is not None and args.input is not None:
        raise CliError("give a SMILES or an input file (-i), not both")
    if args.input is not None:
        from cli.conformers import sample_batch

        sample_batch(args, DEFAULT_CONFORMER_CHECKPOINT)
        return
    if args.smiles is not None:
        from cli.conformers import sample_conformers

        sample_conformers(args, DEFAULT_CONFORMER_CHECKPOINT)
        return
    args.checkpoint = args.checkpoint or DEFAULT_CHECKPOINT
    args.num_samples = 1000 if args.num_samples is None else args.num_samples
    if args.num_samples < 1:
        raise CliError("--num-samples must be at least 1")
    import numpy as np  # after the argument checks: a bad argument is reported without loading torch
    import torch

    from sampler.egnn import EGNNControl
    from sampler.state import collate
    from training.synthetic import SyntheticRunConfig, build_energy, build_system

    payload = _read_checkpoint(args.checkpoint)
    config = SyntheticRunConfig.from_dict(payload["config"])
    control = EGNNControl(config.network)
    control.load_state_dict(payload["control"])
    control.eval()
    energy = build_energy(config.system)
    grid = config.eval_grid if args.steps is None else dataclasses.replace(config.eval_grid, num_steps=args.steps)
    steps = grid.num_steps
    integrator = grid.build_integrator(config.schedule)
    start = collate([build_system(energy)] * args.num_samples)
    x = integrator.sample(control, start, torch.Generator().manual_seed(args.seed)).positions
    x = x.reshape(args.num_samples, energy.num_particles, energy.dim).double()
    finite = torch.isfinite(x).flatten(1).all(1)
    if not bool(finite.all()):
        log.warning("%d of %d samples are not finite and were dropped", int((~finite).sum()), args.num_samples)
        x = x[finite]
    if x.shape[0] == 0:
        raise CliError("the model produced no finite samples; is the checkpoint trained?")
    e = energy.energy(x).numpy()
    flat = x.reshape(x.shape[0], -1).numpy()
    print(
        f"{config.system.upper()}: {args.num_samples} samples from {args.checkpoint} "
        f"(trained {payload['round']} rounds, {payload['energy_calls']} energy calls), {steps} steps"
    )
    print(f"energy: mean {np.mean(e):.3f}  median {np.median(e):.3f}  min {np.min(e):.3f}")
    ref_path = DEFAULT_DATA / "synthetic" / ("DW4_test.npy" if config.system == "dw4" else "LJ13_test.npy")
    if ref_path.is_file():
        ref = torch.from_numpy(np.load(ref_path)[: args.num_samples]).double()
        e_ref = energy.energy(ref.view(-1, energy.num_particles, energy.dim)).numpy()
        print(f"reference MCMC energy: mean {np.mean(e_ref):.3f}  median {np.median(e_ref):.3f}")
    if args.out is not None:
        _write_samples(args.out, flat, energy.dim)
        print(f"wrote {args.out}")


def cmd_energy(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from cli.energy import energy_conformers, is_conformer_file
    from energy.mcmc import mala
    from energy.synthetic import LennardJones
    from training.synthetic import build_energy

    if args.file is None:
        raise CliError("give a file: conformers (.sdf, .xyz, optionally .gz) or synthetic samples (.npy with --system)")
    if not args.file.is_file():
        raise CliError(f"file not found: {args.file}")
    if is_conformer_file(args.file):
        if args.system is not None or args.check_convention:
            raise CliError("--system and --check-convention apply to synthetic .npy samples only")
        energy_conformers(args)
        return
    if args.system is None:
        raise CliError(f"{args.file}: give --system dw4|lj13 for .npy samples, or an .sdf/.xyz conformer file")
    energy = build_energy(args.system)
    arr = np.load(args.file)
    if arr.ndim != 2 or arr.shape[1] != energy.num_particles * energy.dim:
        raise CliError(
            f"{args.file} must be [n, {energy.num_particles * energy.dim}] for {args.system}, got {arr.shape}"
        )
    x = torch.from_numpy(arr).double().view(-1, energy.num_particles, energy.dim)
    e = energy.energy(x).numpy()
    print(f"{len(e)} samples: mean {np.mean(e):.3f}  std {np.std(e):.3f}  min {np.min(e):.3f}  max {np.max(e):.3f}")
    if args.check_convention:
        if args.system != "lj13":
            raise CliError("--check-convention applies to lj13 only")
        x = x[:500]
        for factor in (0.5, 1.0, 2.0):
            lj = LennardJones(pair_factor=factor)
            res = mala(lj, x, step_size=1e-4, num_steps=2000, generator=torch.Generator().manual_seed(0))
            e0, e1 = lj.energy(x), lj.energy(res.samples)
            print(
                f"pair factor {factor}: mean energy {float(e0.mean()):8.2f} -> {float(e1.mean()):8.2f} "
                f"after 2000 MALA steps (acceptance {res.acceptance:.2f})"
            )


def cmd_export(args: argparse.Namespace) -> None:
    from training.checkpoint import export_weights

    try:
        out = export_weights(args.src, args.dst)
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


def cmd_bench(args: argparse.Namespace) -> None:
    if args.benchmark == "redis":
        from cli.workers import cmd_bench_redis

        return cmd_bench_redis(args)
    if args.benchmark == "conformers":
        from cli.bench_conformers import cmd_bench_conformers

        return cmd_bench_conformers(args)
    if args.benchmark == "service":
        from cli.serve import cmd_bench_service

        return cmd_bench_service(args)
    if args.benchmark in ("energy", "compare"):
        from benchmarks import energy_throughput, paired

        run_from_args = energy_throughput.run_from_args if args.benchmark == "energy" else paired.run_from_args
        try:
            lines = run_from_args(args, reproduce_command())
        except (FileNotFoundError, ValueError) as exc:
            raise CliError(str(exc)) from exc
        print("\n".join(lines))
        return None
    from benchmarks.synthetic import run
    from benchmarks.synthetic_report import summarize

    command = reproduce_command()
    results = run(
        systems=args.systems,
        seeds=args.seeds,
        data_dir=args.data_dir,
        out_dir=args.out_dir,
        minutes=args.minutes,
        rounds=args.rounds,
        num_samples=args.num_samples,
        command=command,
        threads=args.threads,
        eval_steps=args.eval_steps,
        train_steps=args.train_steps,
        layers=args.layers,
        hidden=args.hidden,
        samples_per_round=args.samples_per_round,
        buffer_capacity=args.buffer,
        evaluate_only=args.evaluate_only,
    )
    for system, s in summarize(results).items():
        print(
            f"{system}: x-W2 {s['x_w2']:.3f} ± {s['x_w2_std']:.3f}   E-W2 {s['e_w2']:.3f} ± {s['e_w2_std']:.3f}   "
            f"train {s['train_seconds']:.0f} s/seed"
        )
    print(f"wrote {args.out_dir / 'synthetic.md'}\nreproduce: {command}")


def _one_process(command: str, hint: str) -> None:
    """In-process trainers are single-process: under torchrun every rank would write the same checkpoint."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise CliError(f"{command} trains in one process; {hint}")


def _train_torsional(args: argparse.Namespace) -> None:
    from cli.torsional import cmd_train_torsional

    _one_process("train-torsional", "data-parallel: torchrun ... -m cli.main worker train --config torsional")
    cmd_train_torsional(args)


def _train_conformers(args: argparse.Namespace) -> None:
    from cli.conformers import cmd_train_conformers

    _one_process("train-conformers", "start it without torchrun (the Cartesian model has no data-parallel trainer)")
    cmd_train_conformers(args)


def _cmd_worker(args: argparse.Namespace) -> None:
    from cli.workers import cmd_worker

    cmd_worker(args)


def _cmd_redis(args: argparse.Namespace) -> None:
    from cli.workers import cmd_redis

    cmd_redis(args)


def _cmd_serve(args: argparse.Namespace) -> None:
    from cli.serve import cmd_serve

    cmd_serve(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    handlers = {
        "train": cmd_train,
        "sample": cmd_sample,
        "energy": cmd_energy,
        "bench": cmd_bench,
        "export": cmd_export,
        "train-conformers": _train_conformers,
        "train-torsional": _train_torsional,
        "worker": _cmd_worker,
        "redis": _cmd_redis,
        "serve": _cmd_serve,
    }
    try:
        handlers[args.command](args)
    except CliError as exc:
        print(f"adjoint-sampling: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
