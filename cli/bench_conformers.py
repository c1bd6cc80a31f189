"""``adjoint-sampling bench conformers``: the conformer-ensemble benchmark (registered by :mod:`cli.main`).

Three modes: the benchmark against reference ensembles (default; ``--quick`` for a few minutes),
``--corpus`` (generators over the GEOM-DRUGS test SMILES: failures, invalid outputs, time) and
``--rmsd-speed`` (the RMSD engine against RDKit's ``GetBestRMS``: agreement and speed).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cli.common import CliError, reproduce_command

__all__ = ["add_bench_conformers_parser", "cmd_bench_conformers"]


def add_bench_conformers_parser(bsub: Any, data_dir: Path, repo_root: Path) -> None:
    # light modules only: the help and argument errors must not import torch, RDKit or the benchmark code
    from benchmarks.options import METHOD_NAMES, QUICK_MAX_REFS, QUICK_NUM_MOLECULES
    from molecules.constants import DATASETS

    b = bsub.add_parser(
        "conformers",
        help="conformer ensembles vs reference ensembles (COV/AMR), RDKit baselines, timings",
        description=(
            "Score conformer generators against the SPICE and GEOM-DRUGS reference ensembles with the published "
            "protocol (K = 2L, heavy-atom RMSD with symmetry, COV-R/COV-P/AMR); writes "
            "benchmarks/results/conformers_<tag>.{md,json,png}."
        ),
    )
    b.add_argument(
        "--quick",
        action="store_true",
        help=f"the {QUICK_NUM_MOLECULES} smallest molecules per dataset, --max-refs {QUICK_MAX_REFS} (minutes)",
    )
    b.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=["drugs_dev", "spice_test"])
    b.add_argument(
        "--methods", nargs="+", default=["rdkit", "rdkit+mmff", "rdkit+relax"], help=f"from {sorted(METHOD_NAMES)}"
    )
    b.add_argument("--max-refs", type=int, default=None, help="reference conformers per molecule (default 512)")
    b.add_argument("--num-molecules", type=int, default=None, help="the N smallest molecules per dataset")
    b.add_argument("--molecules", nargs="+", default=None, metavar="NAME", help="only these (e.g. rot3_558669a5be)")
    b.add_argument("--seed", type=int, default=42, help="generator seed (RDKit randomSeed; not 0)")
    b.add_argument("--threads", type=int, default=1, help="RDKit embedding/MMFF threads")
    b.add_argument("--relax-model", default="xtb", help="energy model of the +relax methods (energy.registry name)")
    b.add_argument("--relax-workers", type=int, default=None, help="worker processes of the relax model (xtb)")
    b.add_argument(
        "--relax-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another option of the relax model, e.g. solvent=water for xtb (repeatable)",
    )
    b.add_argument("--relax-fmax", type=float, default=0.05, help="relaxation force threshold, eV/Å")
    b.add_argument("--relax-steps", type=int, default=500, help="relaxation step cap")
    b.add_argument("--relax-optimizer", choices=["lbfgs", "fire"], default="lbfgs")
    b.add_argument(
        "--checkpoint",
        type=Path,
        default=repo_root / "checkpoints" / "conformers.pt",
        help="conformer-sampler checkpoint of the adjoint* methods",
    )
    b.add_argument(
        "--torsional-checkpoint",
        type=Path,
        default=repo_root / "checkpoints" / "torsional.pt",
        help="torsional-model checkpoint of the torsional* methods (its seed count also sets the control's)",
    )
    b.add_argument("--sampling-steps", type=int, default=None, help="integration steps of the adjoint* methods")
    b.add_argument("--torsional-steps", type=int, default=None, help="integration steps of the torsional* methods")
    b.add_argument("--mmff-iters", type=int, default=200, help="RDKit MMFF maxIters of rdkit+mmff")
    b.add_argument("--corpus", action="store_true", help="robustness run over the GEOM-DRUGS test SMILES instead")
    b.add_argument("--corpus-size", type=int, default=None, help="first N corpus SMILES (default: all 1000)")
    b.add_argument("--corpus-confs", type=int, default=10, help="conformers per corpus molecule")
    b.add_argument("--rmsd-speed", action="store_true", help="only the RMSD engine vs GetBestRMS measurement")
    b.add_argument("--tag", default=None, help="output name suffix (default: quick, full, refsN, corpus)")
    b.add_argument("--data-dir", type=Path, default=data_dir)
    b.add_argument("--out-dir", type=Path, default=repo_root / "benchmarks" / "results")


def _settings(args: argparse.Namespace) -> Any:
    from benchmarks.methods import MethodSettings

    options: tuple[tuple[str, Any], ...] = ()
    if args.relax_workers is not None:
        options = (("workers", args.relax_workers),)
    for item in args.relax_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--relax-option expects KEY=VALUE, got {item!r}")
        options += ((key.strip().replace("-", "_"), _option_value(value.strip())),)
    return MethodSettings(
        threads=args.threads,
        relax_model=args.relax_model,
        relax_options=options,
        relax_fmax=args.relax_fmax,
        relax_max_steps=args.relax_steps,
        relax_optimizer=args.relax_optimizer,
        mmff_max_iters=args.mmff_iters,
        checkpoint=str(args.checkpoint),
        sampling_steps=args.sampling_steps,
        torsional_checkpoint=str(args.torsional_checkpoint),
        torsional_steps=args.torsional_steps,
    )


def _option_value(text: str) -> Any:
    """``2`` -> int, ``0.5`` -> float, ``none`` -> None, ``true``/``false`` -> bool, anything else a string."""
    lowered = text.lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def cmd_bench_conformers(args: argparse.Namespace) -> None:
    import torch

    # one torch thread per process, as the protocol's speed column says (two threads on a busy 2-core machine
    # made the torsional network ~10x slower)
    torch.set_num_threads(1)
    command = reproduce_command()
    if not args.data_dir.is_dir():
        raise CliError(f"data directory not found: {args.data_dir} (pass --data-dir)")
    try:
        if args.rmsd_speed:
            _rmsd_speed(args, command)
        elif args.corpus:
            _corpus(args, command)
        else:
            _benchmark(args, command)
    except (ValueError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from exc


def _rmsd_speed(args: argparse.Namespace, command: str) -> None:
    from benchmarks.rmsd_speed import measure_rmsd_speed, write_rmsd_speed

    result = measure_rmsd_speed(args.datasets, args.data_dir, max_refs=args.max_refs or 64, seed=args.seed)
    paths = write_rmsd_speed(result, args.out_dir, command)
    t = result["total"]
    print(
        f"RMSD engine vs GetBestRMS: {t['pairs']} pairs, max |diff| {t['max_abs_diff']:.1e} Å on "
        f"{t['pairs_checked']} checked; {t['speedup']:.0f}× faster ({t['engine_seconds']:.2f} s vs "
        f"{t['getbestrms_seconds_estimate']:.1f} s est.)"
    )
    print("wrote " + ", ".join(str(p) for p in paths) + f"\nreproduce: {command}")


def _corpus(args: argparse.Namespace, command: str) -> None:
    from benchmarks.conformers import CorpusConfig, run_corpus
    from benchmarks.report import write_corpus_report

    config = CorpusConfig(
        methods=tuple(args.methods),
        num_conformers=args.corpus_confs,
        limit=args.corpus_size,
        seed=args.seed,
        settings=_settings(args),
        tag=args.tag or "corpus",
    )
    results = run_corpus(config, args.data_dir)
    paths = write_corpus_report(results, args.out_dir, config.tag, command)
    for name, t in results["totals"].items():
        print(
            f"{name}: {t['failures']} failed, {t['partial']} partial, {t['invalid']} wrong bonds/stereo, "
            f"{t['conformers']} conformers in {t['seconds']:.0f} s ({t['conformers_per_s']:.1f}/s)"
        )
    print("wrote " + ", ".join(str(p) for p in paths) + f"\nreproduce: {command}")


def _benchmark(args: argparse.Namespace, command: str) -> None:
    from benchmarks.conformers import QUICK, BenchConfig, run
    from benchmarks.report import summaries, write_report

    num_molecules = (
        args.num_molecules if args.num_molecules is not None else (QUICK.num_molecules if args.quick else None)
    )
    max_refs = args.max_refs if args.max_refs is not None else (QUICK.max_refs if args.quick else 512)
    tag = args.tag or (
        "quick" if args.quick else "full" if max_refs == 512 and num_molecules is None else f"refs{max_refs}"
    )
    config = BenchConfig(
        datasets=tuple(args.datasets),
        methods=tuple(args.methods),
        max_refs=max_refs,
        num_molecules=num_molecules,
        molecules=tuple(args.molecules) if args.molecules else None,
        seed=args.seed,
        settings=_settings(args),
        tag=tag,
    )
    results = run(config, args.data_dir)
    paths = write_report(results, args.out_dir, tag, command)
    for dataset, per_method in summaries(results).items():
        for name, s in per_method.items():
            print(
                f"{dataset:10s} {name:14s} COV-R@1.0 {100 * s.at('cov_r_mean', 1.0):5.1f}%  "
                f"AMR-R {s.amr_r_mean:.3f} Å  COV-P@1.0 {100 * s.at('cov_p_mean', 1.0):5.1f}%  "
                f"AMR-P {s.amr_p_mean:.3f} Å  failed {s.num_failed}/{s.num_molecules}"
            )
    print("wrote " + ", ".join(str(p) for p in paths) + f"\nreproduce: {command}")
