"""The acyl-isomer rule's MMFF94 iteration cap: do fewer iterations change the isomer laws, or the time?

For molecules of ``spice_train`` (training molecules, shuffled, those with an acyl bond), the isomer energies of
:func:`molecules.acyl_isomers.acyl_isomers` from the product's seeds plus ``ISOMER_STARTS`` ETKDG starts, at each
iteration cap: the largest change of any bond's syn probability at 298.15 K against the largest cap, how many
bonds change their majority isomer, and the seconds spent.

Reproduce: ``python -m benchmarks.isomer_iterations`` (writes ``benchmarks/results/isomer_iterations.md``).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from inference.torsional_sampling import ISOMER_STARTS, seed_systems
from molecules.acyl_isomers import acyl_isomers
from molecules.etkdg import embed
from molecules.references import read_index
from molecules.smiles import mol_from_smiles

log = logging.getLogger(__name__)
_REPO = Path(__file__).resolve().parent.parent


def measure(index: Path, caps: list[int], molecules: int, seed: int) -> tuple[dict[int, list[float]], dict[int, float]]:
    """Syn probabilities per cap (one entry per acyl bond, same order) and seconds per cap."""
    rows = read_index(index)
    np.random.default_rng(seed).shuffle(rows)
    p_syn: dict[int, list[float]] = {c: [] for c in caps}
    seconds = dict.fromkeys(caps, 0.0)
    done = 0
    for row in rows:
        try:
            mol = mol_from_smiles(row.smiles)
            systems = seed_systems(mol, 4, seed, torch.float64)
        except ValueError:
            continue
        seeds = torch.cat([s.seed_positions for s in systems]).numpy()
        more = embed(mol, ISOMER_STARTS, seed + 1)
        seeds = np.concatenate([seeds, more]) if len(more) else seeds
        found = {}
        try:
            for cap in caps:
                t0 = time.perf_counter()
                found[cap] = acyl_isomers(mol, seeds, max_iters=cap)
                seconds[cap] += time.perf_counter() - t0
        except ValueError:
            continue
        if not found[caps[0]]:
            continue
        for cap in caps:
            p_syn[cap] += [a.p_syn() for a in found[cap]]
        done += 1
        log.info("%d/%d %s: %d acyl bonds", done, molecules, row.name, len(found[caps[0]]))
        if done >= molecules:
            break
    return p_syn, seconds


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--index", type=Path, default=_REPO.parent / "shared" / "data" / "spice" / "spice_train.txt")
    p.add_argument("--caps", type=int, nargs="+", default=[2000, 500, 300])
    p.add_argument("--molecules", type=int, default=40)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", type=Path, default=_REPO / "benchmarks" / "results" / "isomer_iterations.md")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    command = ("python -m benchmarks.isomer_iterations " + shlex.join(sys.argv[1:] if argv is None else argv)).strip()
    caps = sorted(set(args.caps), reverse=True)
    p_syn, seconds = measure(args.index, caps, args.molecules, args.seed)
    ref = np.array(p_syn[caps[0]])
    lines = [
        "# The acyl-isomer rule's MMFF94 iteration cap",
        "",
        f"Reproduce: `{command}`",
        "",
        f"{args.molecules} shuffled `spice_train` molecules with an acyl bond ({len(ref)} bonds), seeds plus "
        f"{ISOMER_STARTS} ETKDG starts; against the {caps[0]}-iteration cap:",
        "",
        "| cap | seconds | max abs change of p_syn | bonds that change majority isomer |",
        "|---|---|---|---|",
    ]
    for cap in caps:
        q = np.array(p_syn[cap])
        flips = int(((q > 0.5) != (ref > 0.5)).sum())
        lines.append(f"| {cap} | {seconds[cap]:.1f} | {np.abs(q - ref).max():.3f} | {flips} of {len(ref)} |")
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log.info("wrote %s; reproduce: %s", args.out, command)


if __name__ == "__main__":
    main()
