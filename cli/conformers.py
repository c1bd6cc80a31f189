"""CLI handlers of the conformer sampler: ``sample SMILES`` and ``train-conformers``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from rdkit import Chem

from energy.units import KCAL_PER_MOL_IN_EV

__all__ = ["add_train_parser", "cmd_train_conformers", "sample_conformers", "write_conformers"]

log = logging.getLogger("adjoint_sampling")


def _energy_properties(energies_ev: list[float], count: int) -> list[dict[str, float]]:
    """Per conformer: energy (eV) and energy above the lowest (kcal/mol); empty when not scored."""
    if not energies_ev:
        return [{} for _ in range(count)]
    e_min = min(energies_ev)
    return [{"energy_eV": e, "relative_energy_kcal_mol": (e - e_min) / KCAL_PER_MOL_IN_EV} for e in energies_ev]


def write_conformers(path: Path, smiles: str, mol: Chem.Mol, energies_ev: list[float]) -> None:
    """SDF (energies as properties), multi-frame XYZ or JSON, by the file's suffix."""
    conformers = list(mol.GetConformers())
    props = _energy_properties(energies_ev, len(conformers))
    suffix = path.suffix.lower()
    if suffix == ".sdf":
        from service.formats import conformers_sdf

        path.write_text(conformers_sdf(smiles, mol, props))
    elif suffix == ".xyz":
        from service.formats import conformers_xyz

        path.write_text(conformers_xyz(smiles, mol, [p.get("energy_eV") for p in props]))
    elif suffix == ".json":
        doc = {
            "smiles": smiles,
            "elements": [a.GetSymbol() for a in mol.GetAtoms()],
            "conformers": [
                {"positions": c.GetPositions().round(5).tolist(), **p} for c, p in zip(conformers, props, strict=True)
            ],
        }
        path.write_text(json.dumps(doc))
    else:
        raise ValueError(f"cannot write {path}: use .sdf, .xyz or .json")


def sample_conformers(args: argparse.Namespace, default_checkpoint: Path) -> None:
    from cli.common import CliError
    from energy.registry import build_energy_model
    from inference.conformer_sampling import ConformerSampler, SamplingRequest
    from molecules.features import UnsupportedElementError
    from molecules.graph import TooManyAtomsError
    from molecules.smiles import SmilesError

    checkpoint = args.checkpoint or default_checkpoint
    num = 10 if args.num_samples is None else args.num_samples
    if num < 1:
        raise CliError("--num-samples must be at least 1")
    if args.relax and args.energy_model == "none":
        raise CliError("--relax needs an energy model (--energy-model xtb or mmff)")
    if args.refine and args.energy_model == "none":
        raise CliError("--refine needs an energy model to train against (--energy-model xtb or mmff)")
    if args.refine < 0:
        raise CliError("--refine must be a number of rounds >= 0")
    if args.out is not None and args.out.suffix.lower() not in (".sdf", ".xyz", ".json"):
        raise CliError(f"cannot write {args.out}: use .sdf, .xyz or .json")
    try:
        energy = None if args.energy_model == "none" else build_energy_model(args.energy_model)
        sampler = ConformerSampler(checkpoint, energy=energy)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        raise CliError(str(exc)) from exc
    request = SamplingRequest(
        smiles=args.smiles,
        num_conformers=num,
        seed=args.seed,
        steps=args.steps,
        relax=args.relax,
        fmax=args.fmax,
        prune_rms=args.prune_rms,
        energy_window=args.energy_window,
        fragments="largest" if args.largest_fragment else "reject",
        refine_rounds=args.refine,
        repair=args.repair,
    )
    try:
        result = sampler.sample(request)
    except (SmilesError, UnsupportedElementError, TooManyAtomsError) as exc:
        raise CliError(str(exc)) from exc
    summary: dict[str, Any] = result.summary()
    print(f"{args.smiles}: {summary['returned']} of {num} conformers returned  {json.dumps(summary)}")
    e = result.energies_ev
    for k in range(result.num_conformers):
        line = f"  conformer {k:3d}"
        if e:
            line += f"  E {e[k]:14.6f} eV  ΔE {(e[k] - e[0]) / KCAL_PER_MOL_IN_EV:7.2f} kcal/mol"
        print(line)
    if args.out is not None and result.num_conformers == 0:
        print(f"no conformer passed the checks; {args.out} not written")
    elif args.out is not None:
        write_conformers(args.out, args.smiles, result.mol, e)
        print(f"wrote {args.out}")


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
