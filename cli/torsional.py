"""``adjoint-sampling train-torsional``: the torsional conformer model (registered by :mod:`cli.main`)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

from cli.common import CliError

__all__ = ["add_train_torsional_parser", "cmd_train_torsional"]

log = logging.getLogger("adjoint_sampling")


def add_train_torsional_parser(sub: Any, default_data: Path) -> None:
    t = sub.add_parser(
        "train-torsional",
        help="train the torsional conformer model (warm-up + RAM on rotatable torsions)",
        description=(
            "Torsional Adjoint Sampling: bridge-matching warm-up on the torsions of ETKDG + MMFF94 conformers of "
            "SPICE training molecules, then Reciprocal Adjoint Matching against the energy model, on the rotatable "
            "torsions only (bond lengths, angles, rings and stereocentres come from MMFF94-relaxed ETKDG seeds). "
            "Evaluation molecules are always held out. Resumable: --resume continues exactly."
        ),
    )
    t.add_argument("--out", type=Path, required=True, help="checkpoint path (written every --checkpoint-every rounds)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--energy-model", default=None, help="training energy (default mmff)")
    t.add_argument("--tau", type=float, default=None, help="temperature of exp(-E/tau), eV (default 0.05)")
    t.add_argument("--molecules", type=int, default=None, help="number of training molecules (default 256)")
    t.add_argument("--seeds", type=int, default=None, help="ETKDG seeds tried per molecule (default 4)")
    t.add_argument("--warmup-steps", type=int, default=None)
    t.add_argument("--rounds", type=int, default=None, help="RAM rounds")
    t.add_argument("--sde-steps", type=int, default=None, help="integration steps (training and inference)")
    t.add_argument("--layers", type=int, default=None)
    t.add_argument("--hidden", type=int, default=None)
    t.add_argument("--cutoff", type=float, default=None, help="message-passing cutoff, Å")
    t.add_argument("--head-cutoff", type=float, default=None, help="cutoff of the bond-centred head, Å")
    t.add_argument(
        "--heavy-space",
        action="store_true",
        help="through-space messages between heavy atoms only (hydrogens over their bond): ~1.7x cheaper steps",
    )
    t.add_argument(
        "--relax-iterations",
        type=int,
        default=None,
        metavar="N",
        help="train on the relaxed torsional surface: N MMFF94 steps with the rotatable dihedrals held (default 0: "
        "rigid rotations of the seed)",
    )
    t.add_argument(
        "--window",
        type=float,
        default=None,
        metavar="EV",
        help="flat-bottomed target: uniform over torsion states within EV of the seed's energy, exp(-E/tau) beyond "
        "(default 0: exp(-E/tau) everywhere)",
    )
    t.add_argument(
        "--acyl-rule",
        action="store_true",
        help="train with the product's acyl-isomer rule: fresh samples' amides, esters and acids put on isomers "
        "drawn at room temperature before their energy is taken",
    )
    t.add_argument("--max-atoms", type=int, default=None, help="training molecules: at most N atoms with H (60)")
    t.add_argument("--max-heavy-atoms", type=int, default=None, help="training molecules: at most N heavy atoms (30)")
    t.add_argument("--minutes", type=float, default=None, help="stop this call after this much wall time")
    t.add_argument("--checkpoint-every", type=int, default=10, metavar="N")
    t.add_argument("--resume", type=Path, default=None, help="continue a run exactly (its stored config wins)")
    t.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    t.add_argument("--data-dir", type=Path, default=default_data)


def cmd_train_torsional(args: argparse.Namespace) -> None:
    import torch

    from training.torsional_training import TorsionalRunConfig, train_torsional

    torch.set_num_threads(args.threads)
    config = TorsionalRunConfig()
    changes: dict[str, Any] = {}
    for flag, name in (
        ("energy_model", "energy_model"),
        ("tau", "tau_ev"),
        ("molecules", "num_molecules"),
        ("seeds", "num_seeds"),
        ("warmup_steps", "warmup_steps"),
        ("rounds", "max_rounds"),
        ("sde_steps", "sde_steps"),
        ("relax_iterations", "relax_iterations"),
        ("window", "window_ev"),
    ):
        if getattr(args, flag) is not None:
            changes[name] = getattr(args, flag)
    network = config.network
    if args.layers is not None:
        network = dataclasses.replace(network, num_layers=args.layers)
    if args.hidden is not None:
        network = dataclasses.replace(network, hidden=args.hidden)
    if args.cutoff is not None:
        network = dataclasses.replace(network, cutoff_angstrom=args.cutoff)
    if args.head_cutoff is not None:
        network = dataclasses.replace(network, head_cutoff_angstrom=args.head_cutoff)
    if args.heavy_space:
        from molecules.features import ELEMENTS

        network = dataclasses.replace(network, hydrogen_feature=ELEMENTS.index(1))
    if args.acyl_rule:
        changes["acyl_rule"] = True
    selection = config.selection
    if args.max_atoms is not None:
        selection = dataclasses.replace(selection, max_atoms=args.max_atoms)
    if args.max_heavy_atoms is not None:
        selection = dataclasses.replace(selection, max_heavy_atoms=args.max_heavy_atoms)
    try:
        config = dataclasses.replace(config, network=network, selection=selection, **changes)
        trainer = train_torsional(
            config,
            data_dir=args.data_dir,
            seed=args.seed,
            out=args.out,
            resume=args.resume,
            max_minutes=args.minutes,
            checkpoint_every=args.checkpoint_every,
        )
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    print(
        f"round {trainer.round}/{trainer.config.max_rounds}, warm-up {trainer.warmup_done}/"
        f"{trainer.config.warmup_steps}, {trainer.energy_calls} energy calls, checkpoint {args.out}"
    )
