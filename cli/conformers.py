"""CLI handlers of the conformer sampler: ``sample SMILES``, ``sample -i FILE`` (batch) and ``train-conformers``.

``sample`` runs the Python API (:class:`inference.api.ConformerGenerator`) with the defaults of
:mod:`inference.options`, the HTTP service's too; the flags carry the request fields' names
(``--dedup-rmsd`` ↔ ``"dedup_rmsd"``).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inference.options import DEFAULT_ENERGY_MODEL, DEFAULT_NUM_CONFORMERS, DEFAULTS, STEREO_POLICIES, PostProcessing
from molecules.constants import DEFAULT_TEMPERATURE_K

if TYPE_CHECKING:  # the CLI's startup (help, argument errors) does not pay for torch or RDKit
    from rdkit import Chem

    from inference.api import Ensemble

__all__ = [
    "add_sample_arguments",
    "add_train_parser",
    "cmd_train_conformers",
    "sample_batch",
    "sample_conformers",
    "write_conformers",
    "write_ensembles",
]

log = logging.getLogger("adjoint_sampling")

SINGLE_SUFFIXES = (".sdf", ".xyz", ".json")


def add_sample_arguments(s: argparse.ArgumentParser) -> None:
    """The conformer flags of ``sample`` (the DW-4/LJ-13 path shares ``--checkpoint``, ``-n``, ``--steps``,
    ``--seed`` and ``-o``)."""
    s.add_argument(
        "-i",
        "--input",
        type=Path,
        default=None,
        metavar="FILE",
        help="batch: every molecule of a .smi ('SMILES ID' per line), .sdf or .csv file (optionally .gz) into "
        "one -o file (.sdf or .xyz), with a report and a failures file beside it",
    )
    s.add_argument("--smiles-column", default=None, help="CSV input: the SMILES column (required if several match)")
    s.add_argument("--id-column", default=None, help="CSV input: the ID column (default: id, name, title, ...)")
    s.add_argument("--report", type=Path, default=None, help="batch: per-molecule CSV (default: OUT.report.csv)")
    s.add_argument("--failures", type=Path, default=None, help="batch: reasons (default: OUT.failures.csv)")
    s.add_argument("-j", "--jobs", type=int, default=1, help="batch: molecules sampled in parallel (processes)")
    s.add_argument("--no-progress", action="store_true", help="batch: no progress bar")
    s.add_argument(
        "--energy-model",
        default=DEFAULT_ENERGY_MODEL,
        help=f"scores (and relaxes) conformers: xtb, mmff, gfn1-xtb, none (default {DEFAULT_ENERGY_MODEL})",
    )
    s.add_argument(
        "--relax",
        action=argparse.BooleanOptionalAction,
        default=DEFAULTS.relax,
        help="locally minimize every conformer with the energy model",
    )
    s.add_argument("--fmax", type=float, default=0.05, help="relaxation force threshold, eV/Å")
    s.add_argument(
        "--repair",
        action=argparse.BooleanOptionalAction,
        default=DEFAULTS.repair,
        help="MMFF94-optimize the raw samples from the SMILES's bond graph before the checks, inverting "
        "stereocentres and double bonds that came out wrong (default: the model's: off for the torsional model, "
        "on for the Cartesian one)",
    )
    s.add_argument(
        "--dedup-rmsd",
        type=float,
        default=DEFAULTS.dedup_rmsd,
        metavar="Å",
        help=f"remove near-duplicates within this heavy-atom RMSD (default {DEFAULTS.dedup_rmsd}; 0 keeps all)",
    )
    s.add_argument(
        "--energy-tolerance",
        type=float,
        default=DEFAULTS.energy_tolerance,
        metavar="KCAL",
        help="a duplicate must also lie within this energy of the kept conformer (default: RMSD alone)",
    )
    s.add_argument("--prune-rms", type=float, default=None, metavar="Å", help="the former name of --dedup-rmsd")
    s.add_argument(
        "--energy-window",
        type=float,
        default=DEFAULTS.energy_window,
        metavar="KCAL",
        help="keep within this of the lowest",
    )
    s.add_argument(
        "--temperature-k",
        type=float,
        default=DEFAULTS.temperature_k,
        metavar="K",
        help=f"temperature of the Boltzmann weights (default {DEFAULT_TEMPERATURE_K})",
    )
    s.add_argument(
        "--stereo",
        choices=STEREO_POLICIES,
        default=DEFAULTS.stereo,
        help="an unassigned stereocentre or double bond: refuse the molecule (default, naming the atoms) or "
        "enumerate its stereoisomers and sample each",
    )
    s.add_argument("--max-isomers", type=int, default=DEFAULTS.max_isomers, help="cap of --stereo enumerate")
    s.add_argument(
        "--select",
        action=argparse.BooleanOptionalAction,
        default=DEFAULTS.select,
        help="relaxed selection, the torsional model's default: draw four times the samples (35%% of them with "
        "uniform torsions), MMFF94-relax each (torsions first, then 30 Cartesian iterations for the distinct ones), "
        "drop duplicate basins, keep -n by their Boltzmann law at 3 kcal/mol; --no-select: the fast pipeline (each "
        "of -n draws relaxed once by 200 Cartesian MMFF94 iterations: about 1.25x the speed, lower coverage)",
    )
    s.add_argument(
        "--largest-fragment",
        action="store_true",
        help="for a SMILES with several fragments (salt, solvent): sample the largest (default: refuse)",
    )
    s.add_argument(
        "--refine",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="fine-tune the model on this molecule alone with ROUNDS rounds of RAM first (minutes; better ensembles)",
    )


def _post_processing(args: argparse.Namespace) -> PostProcessing:
    from cli.common import CliError

    try:
        return PostProcessing(
            repair=args.repair,
            relax=args.relax,
            dedup_rmsd=args.prune_rms if args.prune_rms is not None else args.dedup_rmsd,
            energy_tolerance=args.energy_tolerance,
            energy_window=args.energy_window,
            temperature_k=args.temperature_k,
            stereo=args.stereo,
            max_isomers=args.max_isomers,
            select=args.select,
        )
    except ValueError as exc:
        raise CliError(str(exc).replace("_", "-")) from exc


def _check_common(args: argparse.Namespace) -> int:
    from cli.common import CliError

    num = DEFAULT_NUM_CONFORMERS if args.num_samples is None else args.num_samples
    if num < 1:
        raise CliError("--num-samples must be at least 1")
    if args.relax and args.energy_model == "none":
        raise CliError("--relax needs an energy model (--energy-model xtb or mmff)")
    if args.refine and args.energy_model == "none":
        raise CliError("--refine needs an energy model to train against (--energy-model xtb or mmff)")
    if args.refine < 0:
        raise CliError("--refine must be a number of rounds >= 0")
    return num


def _suffix(path: Path) -> str:
    """``.sdf`` for ``x.sdf`` and ``x.sdf.gz``."""
    return Path(path.name.removesuffix(".gz")).suffix.lower()


def write_ensembles(path: Path, ensembles: Sequence[Ensemble]) -> None:
    """SDF (the tags of ``docs/OUTPUT.md``), CREST-layout XYZ (each frame named after its molecule when the file
    holds several) or the HTTP service's JSON answer, by the file's suffix (``.gz`` compresses SDF and XYZ)."""
    from cli.batch import open_output, render_ensembles

    suffix = _suffix(path)
    if suffix == ".json":
        from service.engine import build_response
        from service.schemas import StereoisomersResponse

        answers = [build_response(e) for e in ensembles]
        enumerated = any(e.stereoisomer is not None for e in ensembles)
        doc = StereoisomersResponse(smiles=ensembles[0].input_smiles, stereoisomers=answers) if enumerated else None
        path.write_text((doc or answers[0]).model_dump_json())
        return
    if suffix not in (".sdf", ".xyz"):
        raise ValueError(f"cannot write {path}: use .sdf, .xyz or .json")
    text = render_ensembles(ensembles, suffix[1:]) if len(ensembles) > 1 or suffix == ".sdf" else _crest(ensembles[0])
    with open_output(path) as fh:
        fh.write(text)


def _crest(ensemble: Ensemble) -> str:
    """One molecule's XYZ: exactly CREST's ``crest_conformers.xyz`` (bare energies) when it has energies."""
    from molecules.rmsd import conformer_coordinates
    from molecules.tags import crest_xyz_text
    from molecules.xyz import XyzFrame, xyz_text

    symbols = [a.GetSymbol() for a in ensemble.mol.GetAtoms()]
    positions = conformer_coordinates(ensemble.mol)
    if ensemble.energies_ev:
        return crest_xyz_text(symbols, positions, ensemble.energies_ev)
    return xyz_text([XyzFrame(tuple(symbols), p, ensemble.name) for p in positions])


def write_conformers(path: Path, smiles: str, mol: Chem.Mol, energies_ev: list[float]) -> None:
    """Conformers of ``mol`` with their energies (eV; empty: not scored) as SDF (the SD tags of
    ``docs/OUTPUT.md``, titled ``smiles``), CREST-layout XYZ or JSON, by the file's suffix."""
    suffix = _suffix(path)
    if suffix == ".sdf":
        from molecules.sdf import write_sdf
        from molecules.tags import tag_conformers

        write_sdf(path, tag_conformers(mol, smiles, energies_ev=energies_ev or None, input_smiles=smiles))
    elif suffix == ".xyz":
        from molecules.rmsd import conformer_coordinates
        from molecules.tags import write_crest_xyz
        from molecules.xyz import XyzFrame, write_xyz

        symbols = [a.GetSymbol() for a in mol.GetAtoms()]
        positions = conformer_coordinates(mol)
        if energies_ev:
            write_crest_xyz(path, symbols, positions, energies_ev)
        else:
            write_xyz(path, [XyzFrame(tuple(symbols), p, smiles) for p in positions])
    elif suffix == ".json":
        from molecules.ensemble import relative_energies_kcal_mol

        relative = relative_energies_kcal_mol(energies_ev).tolist() if energies_ev else []
        conformers = [
            {"positions": c.GetPositions().round(5).tolist()}
            | ({"energy_eV": energies_ev[k], "relative_energy_kcal_mol": relative[k]} if energies_ev else {})
            for k, c in enumerate(mol.GetConformers())
        ]
        doc = {"smiles": smiles, "elements": [a.GetSymbol() for a in mol.GetAtoms()], "conformers": conformers}
        path.write_text(json.dumps(doc))
    else:
        raise ValueError(f"cannot write {path}: use .sdf, .xyz or .json")


def _print_ensemble(label: str, ensemble: Ensemble, num: int) -> None:
    summary: dict[str, Any] = ensemble.summary()
    print(f"{label}: {summary['returned']} of {num} conformers returned  {json.dumps(summary)}")
    e, rel, w = ensemble.energies_ev, ensemble.relative_energies_kcal_mol, ensemble.boltzmann_weights
    for k in range(ensemble.num_conformers):
        line = f"  conformer {k + 1:3d}"
        if e:
            line += f"  E {e[k]:14.6f} eV  ΔE {rel[k]:7.2f} kcal/mol  weight {w[k]:.4f}"
        print(line)


def sample_conformers(args: argparse.Namespace, default_checkpoint: Path) -> None:
    """``sample SMILES``: one molecule (or each of its stereoisomers), printed and written to ``-o``."""
    from cli.common import CliError
    from inference.api import ConformerGenerator
    from molecules.stereo import UnassignedStereoError

    num = _check_common(args)
    options = _post_processing(args)
    if args.out is not None and _suffix(args.out) not in SINGLE_SUFFIXES:
        raise CliError(f"cannot write {args.out}: use .sdf, .xyz or .json")
    with ConformerGenerator(checkpoint=args.checkpoint or default_checkpoint) as generator:
        try:
            ensembles = generator.generate(
                args.smiles,
                num_conformers=num,
                energy_model=args.energy_model,
                options=options,
                seed=args.seed,
                steps=args.steps,
                fragments="largest" if args.largest_fragment else "reject",
                fmax=args.fmax,
                refine_rounds=args.refine,
            )
        except UnassignedStereoError as exc:
            raise CliError(f"{exc} (--stereo enumerate samples each stereoisomer)") from exc
        except (FileNotFoundError, ValueError, ImportError) as exc:  # SmilesError, unsupported element, ...
            raise CliError(str(exc)) from exc
    for ensemble in ensembles:
        _print_ensemble(ensemble.smiles if ensemble.stereoisomer else args.smiles, ensemble, num)
    if args.out is None:
        return
    if not any(e.num_conformers for e in ensembles):
        print(f"no conformer passed the checks; {args.out} not written")
        return
    write_ensembles(args.out, ensembles)
    print(f"wrote {args.out}")


def sample_batch(args: argparse.Namespace, default_checkpoint: Path) -> None:
    """``sample -i FILE -o OUT``: every molecule of the file (see :mod:`cli.batch`)."""
    from cli.batch import BATCH_SUFFIXES, BatchJob, default_side_files, print_summary, run_batch
    from cli.common import CliError
    from molecules.inputs import input_format, input_records

    num = _check_common(args)
    options = _post_processing(args)
    if args.out is None:
        raise CliError("a batch (-i FILE) needs an output file: -o OUT.sdf (or .xyz)")
    if _suffix(args.out) not in BATCH_SUFFIXES:
        raise CliError(f"cannot write a batch to {args.out}: use .sdf or .xyz (optionally .gz)")
    if args.jobs < 1:
        raise CliError("--jobs must be at least 1")
    checkpoint = args.checkpoint or default_checkpoint
    if not Path(checkpoint).is_file():
        raise CliError(f"checkpoint not found: {checkpoint}")
    fragments = "largest" if args.largest_fragment else "reject"
    try:
        fmt = input_format(args.input)
        items = list(
            input_records(
                args.input,
                fmt=fmt,
                fragments=fragments,
                smiles_column=args.smiles_column,
                id_column=args.id_column,
            )
        )
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    report, failures = default_side_files(args.out)
    report, failures = args.report or report, args.failures or failures
    job = BatchJob(
        checkpoint=Path(checkpoint),
        energy_model=args.energy_model,
        num_conformers=num,
        options=options,
        seed=args.seed,
        steps=args.steps,
        fragments=fragments,
        fmax=args.fmax,
        refine_rounds=args.refine,
        output=_suffix(args.out)[1:],
    )
    summary = run_batch(
        items,
        job,
        out=args.out,
        report=report,
        failures=failures,
        jobs=args.jobs,
        sdf_input=fmt == "sdf",
        progress=not args.no_progress,
    )
    print_summary(summary, args.out, report, failures)


def add_train_parser(sub: Any, default_data: Path, repo_root: Path) -> None:
    t = sub.add_parser(
        "train-conformers",
        help="train the amortized conformer sampler (warm-up + RAM against an energy model)",
        description=(
            "Bridge-matching warm-up on ETKDG conformers of SPICE training molecules, then Reciprocal Adjoint "
            "Matching against the energy model. Evaluation molecules are always held out."
        ),
    )
    t.add_argument("--out", type=Path, required=True, help="checkpoint path")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--energy-model", default=None, help="xtb (default), mmff, gfn1-xtb, fairchem")
    t.add_argument("--molecules", type=int, default=None, help="number of training molecules")
    t.add_argument("--warmup-steps", type=int, default=None)
    t.add_argument("--rounds", type=int, default=None, help="RAM rounds (sets the learning-rate schedule)")
    t.add_argument("--minutes", type=float, default=None, help="stop after this much wall time")
    t.add_argument(
        "--network",
        choices=("egnn", "tensor-product"),
        default="egnn",
        help="control network: the EGNN (default) or the e3nn tensor-product network",
    )
    t.add_argument("--layers", type=int, default=None)
    t.add_argument("--hidden", type=int, default=None, help="EGNN width, or the tensor product's 0e channels")
    t.add_argument(
        "--checkpoint-every",
        type=int,
        default=10,
        metavar="N",
        help="save every N rounds (and every 50 N warm-up steps)",
    )
    t.add_argument("--resume", type=Path, default=None)
    t.add_argument(
        "--init-from",
        type=Path,
        default=None,
        metavar="CKPT",
        help="start from this conformer checkpoint's weights (same network); --warmup-steps 0 skips the warm-up",
    )
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    t.add_argument("--data-dir", type=Path, default=default_data)
    t.add_argument("--cache-dir", type=Path, default=repo_root / ".cache")


def cmd_train_conformers(args: argparse.Namespace) -> None:
    import dataclasses

    from cli.common import CliError
    from training.conformer_training import ConformerRunConfig, tensor_product_network, train_conformers

    config = ConformerRunConfig()
    if args.network == "tensor-product":
        config = dataclasses.replace(config, network=tensor_product_network())
    changes: dict[str, Any] = {}
    if args.energy_model is not None:
        changes["energy_model"] = args.energy_model
    if args.molecules is not None:
        changes["num_molecules"] = args.molecules
    if args.warmup_steps is not None:
        changes["warmup_steps"] = args.warmup_steps
    if args.rounds is not None:
        changes["max_rounds"] = args.rounds
    if args.minutes is not None:
        changes["max_minutes"] = args.minutes
    net: dict[str, Any] = {}
    if args.layers is not None:
        net["num_layers"] = args.layers
    if args.hidden is not None:
        net["scalars" if args.network == "tensor-product" else "hidden"] = args.hidden
    if net:
        changes["network"] = dataclasses.replace(config.network, **net)
    config = dataclasses.replace(config, **changes)
    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise CliError("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    for given in (args.resume, args.init_from):
        if given is not None and not given.exists():
            raise CliError(f"checkpoint not found: {given}")
    try:
        trainer = train_conformers(
            config,
            data_dir=args.data_dir,
            seed=args.seed,
            out=args.out,
            cache_dir=args.cache_dir,
            resume=args.resume,
            checkpoint_every=args.checkpoint_every,
            init_from=args.init_from,
        )
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    log.info("trained %d rounds, %d energy calls; checkpoint %s", trainer.round, trainer.energy_calls, args.out)
