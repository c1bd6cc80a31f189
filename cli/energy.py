"""CLI handler of ``energy`` for molecules: energies (and relaxation) of the conformers of an SDF/XYZ file.

``adjoint-sampling energy FILE.sdf|FILE.xyz[.gz] [--model xtb|gfn1-xtb|mmff|fairchem] [--checkpoint PATH]
[--charge Q] [--relax --fmax F --max-steps N --optimizer lbfgs|fire] [--out FILE.sdf|FILE.xyz[.gz]]``
prints one row per conformer (energy in eV, energy relative to the lowest valid conformer of the same
formula in kcal/mol, validity with the reason, and with ``--relax`` the steps and convergence) and writes
the (relaxed) conformers with these values as SDF properties or XYZ comments.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # RDKit and torch are imported when the command runs, not when the parser is built
    from rdkit import Chem

    from energy.protocol import EnergyModel
    from energy.relax import RelaxConfig
    from molecules.topology import ConformerFile

__all__ = ["ConformerEnergies", "add_energy_arguments", "energy_conformers", "is_conformer_file"]

log = logging.getLogger("adjoint_sampling")


def is_conformer_file(path: Path) -> bool:
    """``.sdf`` or ``.xyz``, optionally gzipped."""
    name = path.name.lower().removesuffix(".gz")
    return name.endswith((".sdf", ".xyz"))


def add_energy_arguments(e: argparse.ArgumentParser) -> None:
    """The molecular options of the ``energy`` subcommand."""
    e.add_argument(
        "--model", default="xtb", help="energy model for molecules: xtb (GFN2-xTB), gfn1-xtb, mmff, fairchem"
    )
    e.add_argument("--checkpoint", type=Path, default=None, help="fairchem: a local UMA/eSEN checkpoint file")
    e.add_argument("--workers", type=int, default=None, help="xtb: worker processes (default 1)")
    e.add_argument(
        "--charge", type=int, default=None, help="total charge of XYZ molecules (default 0); SDF: from formal charges"
    )
    e.add_argument("--relax", action="store_true", help="locally minimize every conformer first")
    e.add_argument("--fmax", type=float, default=0.05, help="relaxation converged below this force, eV/Å")
    e.add_argument("--max-steps", type=int, default=500, help="relaxation step limit per conformer")
    e.add_argument("--optimizer", choices=["lbfgs", "fire"], default="lbfgs", help="relaxation algorithm")
    e.add_argument("--out", type=Path, default=None, help="write the conformers with energies: .sdf or .xyz (.gz)")


@dataclass(frozen=True)
class ConformerEnergies:
    """Per conformer: energy (eV, nan if invalid), relative energy (kcal/mol), validity, reason, and with
    relaxation the starting energy, steps and convergence (``None`` without)."""

    energies: list[float]
    relative_kcal: list[float]
    valid: list[bool]
    reasons: list[str | None]
    initial_energies: list[float] | None = None
    steps: list[int] | None = None
    converged: list[bool] | None = None


def _relative_kcal(energies: Sequence[float], valid: Sequence[bool], formulas: Sequence[str]) -> list[float]:
    """Energies relative to the lowest valid one of the same composition, kcal/mol (nan where invalid)."""
    from energy.units import KCAL_PER_MOL_IN_EV

    lowest: dict[str, float] = {}
    for e, ok, f in zip(energies, valid, formulas, strict=True):
        if ok:
            lowest[f] = min(lowest.get(f, math.inf), e)
    return [
        (e - lowest[f]) / KCAL_PER_MOL_IN_EV if ok else math.nan
        for e, ok, f in zip(energies, valid, formulas, strict=True)
    ]


def _table(names: Sequence[str], mols: Sequence[Chem.Mol], result: ConformerEnergies) -> list[str]:
    relaxed = result.steps is not None
    head = f"{'#':>4}  {'name':<24} {'atoms':>5}  "
    head += f"{'E0 / eV':>16}  {'E / eV':>16}  " if relaxed else f"{'E / eV':>16}  "
    head += f"{'ΔE / kcal/mol':>13}  " + (f"{'steps':>5}  {'conv':>4}  " if relaxed else "") + "status"
    rows = [head]
    for k, mol in enumerate(mols):
        name = (names[k] or "-")[:24]
        row = f"{k:>4}  {name:<24} {mol.GetNumAtoms():>5}  "
        if relaxed:
            assert result.initial_energies is not None and result.converged is not None
            row += f"{result.initial_energies[k]:>16.6f}  "
        row += f"{result.energies[k]:>16.6f}  {result.relative_kcal[k]:>13.3f}  "
        if relaxed:
            assert result.steps is not None and result.converged is not None
            row += f"{result.steps[k]:>5d}  {'yes' if result.converged[k] else 'no':>4}  "
        row += "ok" if result.valid[k] else f"invalid: {result.reasons[k]}"
        rows.append(row)
    return rows


def _write(path: Path, mols: Sequence[Chem.Mol], names: Sequence[str], model: str, result: ConformerEnergies) -> None:
    from energy.units import KCAL_PER_MOL_IN_EV
    from molecules.sdf import write_sdf
    from molecules.topology import conformer_format
    from molecules.xyz import XyzFrame, write_xyz

    props: list[dict[str, Any]] = []
    for k in range(len(mols)):
        p: dict[str, Any] = {"model": model, "valid": result.valid[k], "reason": result.reasons[k]}
        if result.valid[k]:
            p |= {
                "energy_eV": result.energies[k],
                "energy_kcal_mol": result.energies[k] / KCAL_PER_MOL_IN_EV,
                "relative_energy_kcal_mol": result.relative_kcal[k],
            }
        if result.steps is not None and result.converged is not None and result.initial_energies is not None:
            p |= {"converged": result.converged[k], "relax_steps": result.steps[k]}
            if math.isfinite(result.initial_energies[k]):
                p["initial_energy_eV"] = result.initial_energies[k]
        props.append(p)
    if conformer_format(path) == "sdf":
        write_sdf(path, mols, props)
        return
    frames = []
    for k, mol in enumerate(mols):
        fields = " ".join(f"{key}={value}" for key, value in props[k].items() if key != "reason" and value is not None)
        frames.append(
            XyzFrame(
                tuple(a.GetSymbol() for a in mol.GetAtoms()),
                mol.GetConformer().GetPositions(),
                f"{names[k]} {fields}".strip(),
            )
        )
    write_xyz(path, frames)


def energy_conformers(args: argparse.Namespace) -> None:
    """Evaluate (and optionally relax) the conformers of ``args.file``; print the table, write ``--out``."""
    from cli.common import CliError
    from energy.registry import build_energy_model
    from energy.relax import RelaxConfig
    from molecules.topology import conformer_format, read_conformers

    if args.out is not None:
        try:
            conformer_format(args.out)
        except ValueError:
            raise CliError(f"cannot write {args.out}: use .sdf or .xyz (optionally .gz)") from None
    if args.checkpoint is not None and args.model != "fairchem":
        raise CliError("--checkpoint applies to --model fairchem only")
    if args.workers is not None and args.model not in ("xtb", "gfn1-xtb"):
        raise CliError("--workers applies to --model xtb and gfn1-xtb only")
    try:
        config = RelaxConfig(fmax=args.fmax, max_steps=args.max_steps, optimizer=args.optimizer)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    try:
        conformers = read_conformers(args.file, charge=args.charge)
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    for k, problem in enumerate(conformers.problems):
        if problem is not None:
            log.warning("frame %d: %s (evaluated without bonds)", k, problem)
    options: dict[str, Any] = {} if args.checkpoint is None else {"checkpoint": args.checkpoint}
    if args.workers is not None:
        options["workers"] = args.workers
    try:
        model = build_energy_model(args.model, **options)
    except (ValueError, ImportError, FileNotFoundError, RuntimeError) as exc:
        raise CliError(f"energy model {args.model!r}: {exc}") from exc
    try:
        _evaluate_and_report(args, model, conformers, config)
    finally:
        close = getattr(model, "close", None)  # the xtb worker pool
        if callable(close):
            close()


def _evaluate_and_report(
    args: argparse.Namespace, model: EnergyModel, conformers: ConformerFile, config: RelaxConfig
) -> None:
    import torch
    from rdkit import Chem

    from energy.relax import relax

    structures = conformers.structures
    mols = [Chem.Mol(m) for m in conformers.molecules]
    if args.relax:
        relaxed = relax(model, structures, config)
        positions, energies, valid = relaxed.positions, relaxed.energies, relaxed.valid
        reasons = relaxed.reasons
        extra: dict[str, Any] = {
            "initial_energies": relaxed.initial_energies.tolist(),
            "steps": relaxed.steps.tolist(),
            "converged": relaxed.converged.tolist(),
        }
    else:
        evaluated = model.evaluate(structures)
        positions, energies, valid, reasons = (
            structures.positions,
            evaluated.energies,
            evaluated.valid,
            evaluated.reasons,
        )
        extra = {}
    reasons = tuple(
        f"{r} [bond perception: {p}]" if r is not None and p is not None else r
        for r, p in zip(reasons, conformers.problems, strict=True)
    )
    ends = torch.cumsum(structures.num_atoms, 0).tolist()
    for mol, end, n in zip(mols, ends, structures.num_atoms.tolist(), strict=True):
        mol.GetConformer().SetPositions(positions[end - n : end].detach().double().cpu().numpy())
    formulas = [" ".join(sorted(a.GetSymbol() for a in m.GetAtoms())) for m in mols]  # same atoms, comparable
    e_list, v_list = energies.double().tolist(), valid.tolist()
    result = ConformerEnergies(
        energies=e_list,
        relative_kcal=_relative_kcal(e_list, v_list, formulas),
        valid=v_list,
        reasons=list(reasons),
        **extra,
    )
    print(f"{model.name}: {len(mols)} conformers from {args.file}" + (" (relaxed)" if args.relax else ""))
    print("\n".join(_table(conformers.names, mols, result)))
    if args.out is not None:
        _write(args.out, mols, conformers.names, model.name, result)
        print(f"wrote {args.out}")
