"""Batched vs one-at-a-time relaxation (:func:`energy.relax.relax`) with ANI-2xt.

A batch of ETKDG conformers (``--molecules`` drug-sized SPICE test molecules that ANI-2xt covers,
``--conformers`` each, so the batch mixes molecules of different sizes) is relaxed twice with the same
:class:`~energy.relax.RelaxConfig`: once as one batch (every optimizer step is one ``evaluate`` call on all
structures still running) and once structure by structure (one ``relax`` call per conformer). Reported:
wall time, ``evaluate`` calls and structure evaluations, converged structures, and how far the final
energies of the two runs are apart (each structure's optimizer sees the same energies either way, up to
the rounding of a batched matrix product, so the two runs should end in the same minima).

One torch thread (``--threads``). Results: ``benchmarks/results/relax_batched.md``.

Reproduce: ``python -m benchmarks.relax_batched``.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CountingModel", "main", "run"]

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
ORGANIC = frozenset({"H", "C", "N", "O", "F", "S", "Cl"})


class CountingModel:
    """An :class:`~energy.protocol.EnergyModel` that counts the calls and structures it passes on."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.calls = 0
        self.structures = 0

    @property
    def name(self) -> str:
        return str(self.model.name)

    def evaluate(self, structures: Any) -> Any:
        self.calls += 1
        self.structures += structures.num_structures
        return self.model.evaluate(structures)


@dataclass(frozen=True, kw_only=True)
class Outcome:
    seconds: float
    calls: int
    evaluations: int
    converged: int
    energies: Any


def pick_smiles(data_dir: Path, count: int) -> list[str]:
    """``count`` neutral SPICE test molecules of H C N O F S Cl with 18–30 heavy atoms (index order)."""
    from rdkit import Chem

    from molecules.references import read_index

    picked = []
    for row in read_index(data_dir / "spice" / "spice_test.txt"):
        mol = Chem.MolFromSmiles(row.smiles)
        symbols = {a.GetSymbol() for a in Chem.AddHs(mol).GetAtoms()}
        if symbols <= ORGANIC and Chem.GetFormalCharge(mol) == 0 and 18 <= mol.GetNumHeavyAtoms() <= 30:
            picked.append(row.smiles)
        if len(picked) == count:
            break
    return picked


def conformer_batch(smiles: list[str], conformers: int, seed: int) -> Any:
    from rdkit import Chem
    from rdkit.Chem import rdDistGeom

    from energy.protocol import Structures
    from molecules.structures import conformer_structures

    parts = []
    for smi in smiles:
        mol = Chem.AddHs(Chem.MolFromSmiles(smi))
        if len(rdDistGeom.EmbedMultipleConfs(mol, numConfs=conformers, randomSeed=seed)) != conformers:
            raise RuntimeError(f"ETKDG embedded fewer than {conformers} conformers of {smi}")
        parts.append(conformer_structures(mol))
    return Structures.concat(parts)


def _batched(model: Any, batch: Any, config: Any) -> Outcome:
    from energy.relax import relax

    counter = CountingModel(model)
    start = time.perf_counter()
    result = relax(counter, batch, config)
    seconds = time.perf_counter() - start
    return Outcome(
        seconds=seconds,
        calls=counter.calls,
        evaluations=counter.structures,
        converged=int(result.converged.sum()),
        energies=result.energies,
    )


def _sequential(model: Any, batch: Any, config: Any) -> Outcome:
    import torch

    from energy.relax import relax, select_structures

    counter = CountingModel(model)
    energies = torch.empty(batch.num_structures, dtype=torch.float64)
    converged = 0
    start = time.perf_counter()
    for k in range(batch.num_structures):
        keep = torch.zeros(batch.num_structures, dtype=torch.bool)
        keep[k] = True
        result = relax(counter, select_structures(batch, keep), config)
        energies[k] = result.energies[0]
        converged += int(result.converged.sum())
    seconds = time.perf_counter() - start
    return Outcome(
        seconds=seconds, calls=counter.calls, evaluations=counter.structures, converged=converged, energies=energies
    )


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    from energy.ani2xt import Ani2xtEnergy
    from energy.relax import RelaxConfig

    torch.set_num_threads(args.threads)
    smiles = pick_smiles(args.data_dir, args.molecules)
    batch = conformer_batch(smiles, args.conformers, args.seed)
    config = RelaxConfig(fmax=args.fmax, max_steps=args.max_steps, optimizer=args.optimizer)
    log.info("%d structures of %d molecules: %s", batch.num_structures, len(smiles), smiles)
    rows = []
    for dtype in args.dtypes:
        model = Ani2xtEnergy(dtype=dtype)
        model.evaluate(batch)  # warm-up
        batched = _batched(model, batch, config)
        log.info("%s batched: %.1f s, %d calls", dtype, batched.seconds, batched.calls)
        sequential = _sequential(model, batch, config)
        log.info("%s one at a time: %.1f s, %d calls", dtype, sequential.seconds, sequential.calls)
        diff = (batched.energies.double() - sequential.energies).abs()
        rows.append(
            {
                "dtype": dtype,
                "structures": batch.num_structures,
                "batched": batched,
                "sequential": sequential,
                "speedup": sequential.seconds / batched.seconds,
                "max_energy_diff_ev": float(diff.max()),
                "median_energy_diff_ev": float(diff.median()),
                "smiles": smiles,
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]], command: str, args: argparse.Namespace) -> str:
    lines = [
        "# Batched vs one-at-a-time relaxation with ANI-2xt",
        "",
        f"Reproduce: `{command}`",
        "",
        f"{rows[0]['structures']} ETKDG conformers ({args.conformers} each of {len(rows[0]['smiles'])} SPICE test "
        f"molecules: {', '.join(f'`{s}`' for s in rows[0]['smiles'])}); {args.optimizer}, fmax {args.fmax} eV/Å, "
        f"at most {args.max_steps} steps; {args.threads} torch thread(s), CPU.",
        "",
        "| dtype | mode | wall (s) | evaluate calls | structure evaluations | converged | speedup |"
        " max / median \\|ΔE\\| batched vs one-at-a-time (eV) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for mode in ("batched", "sequential"):
            o = r[mode]
            speed = f"{r['speedup']:.1f}×" if mode == "batched" else "1×"
            diff = f"{r['max_energy_diff_ev']:.1e} / {r['median_energy_diff_ev']:.1e}" if mode == "batched" else ""
            lines.append(
                f"| {r['dtype']} | {'batched' if mode == 'batched' else 'one at a time'} | {o.seconds:.1f} | "
                f"{o.calls} | {o.evaluations} | {o.converged}/{r['structures']} | {speed} | {diff} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.relax_batched", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--molecules", type=int, default=4)
    parser.add_argument("--conformers", type=int, default=16, help="ETKDG conformers per molecule (default 16)")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    parser.add_argument("--fmax", type=float, default=0.05, help="eV/Å (default 0.05)")
    parser.add_argument("--max-steps", type=int, default=500)
    parser.add_argument("--optimizer", default="lbfgs", choices=["lbfgs", "fire"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = " ".join(["python -m benchmarks.relax_batched", *(shlex.quote(a) for a in argv)])
    table = markdown(run(args), command, args)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "relax_batched.md").write_text(table)
    sys.stdout.write(table)  # the table is the output
    return 0


if __name__ == "__main__":
    sys.exit(main())
