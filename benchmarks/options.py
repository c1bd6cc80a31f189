"""The benchmarks' command-line options and the names their help lists, without the benchmarks' dependencies.

``adjoint-sampling --help``, ``adjoint-sampling bench BENCHMARK --help`` and argument errors build their parsers
from this module, which imports only the standard library and :mod:`training.paths`: no torch, RDKit, numpy
or benchmark code is loaded until a benchmark runs. The benchmark modules take these options and names from
here (``python -m benchmarks.energy_throughput`` and ``python -m benchmarks.service_load`` share them).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from training.paths import DEFAULT_DATA, RESULTS_DIR, SHIPPED_CONFORMER_CHECKPOINT

__all__ = [
    "ENERGY_SMILES_FILE",
    "METHOD_NAMES",
    "QUICK_MAX_REFS",
    "QUICK_NUM_MOLECULES",
    "add_compare_arguments",
    "add_energy_throughput_arguments",
    "add_service_load_arguments",
]

METHOD_NAMES: tuple[str, ...] = (
    "rdkit",
    "rdkit+mmff",
    "rdkit+relax",
    "rdkit+mmff+relax",
    "torsional",
    "torsional+mmff",
    "torsional+mmff+relax",
    "torsional+select",
    "torsion-control",
    "torsion-control+mmff",
    "torsion-control+tfr",
    "torsion-control+isomers+mmff",
    "conforge",
    "adjoint",
    "adjoint+mmff",
    "adjoint+repair",
    "adjoint+repair+relax",
    "adjoint+relax",
)
"""The built-in conformer-benchmark methods, the keys of :data:`benchmarks.methods.METHODS` (a test checks that
the two agree); ``bench conformers --help`` lists them."""

QUICK_NUM_MOLECULES = 3
"""``bench conformers --quick``: the N smallest molecules per dataset (:data:`benchmarks.conformers.QUICK`)."""
QUICK_MAX_REFS = 4
"""``bench conformers --quick``: reference conformers per molecule."""

ENERGY_SMILES_FILE = DEFAULT_DATA / "spice" / "spice_train.txt"
"""Where ``bench energy`` picks its drug-like molecules by default."""


def add_energy_throughput_arguments(parser: argparse.ArgumentParser) -> None:
    """The options, shared by ``python -m benchmarks.energy_throughput`` and ``adjoint-sampling bench energy``."""
    parser.add_argument(
        "--models", nargs="+", default=None, metavar="NAME", help="registry names (default: every registered model)"
    )
    parser.add_argument("--molecules", type=int, default=4, help="drug-like molecules (default 4)")
    parser.add_argument("--conformers-per-molecule", type=int, default=16, help="ETKDG conformers each (default 16)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per variant (default 5)")
    parser.add_argument(
        "--chunk",
        type=int,
        default=None,
        help="structures per task in the generic pool (default: one task per worker)",
    )
    parser.add_argument(
        "--min-repeat-seconds",
        type=float,
        default=0.5,
        help="each timed repeat calls the batch as often as fills this long and reports per call (default 0.5)",
    )
    parser.add_argument("--seed", type=int, default=1, help="ETKDG seed (default 1)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch/OpenMP threads of the in-process variant (default 1)"
    )
    parser.add_argument("--smiles-file", type=Path, default=ENERGY_SMILES_FILE)
    parser.add_argument(
        "--fairchem-checkpoint", type=Path, default=None, help="local fairchem checkpoint (default: random tiny UMA)"
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """``adjoint-sampling bench compare`` (:mod:`benchmarks.paired`)."""
    parser.add_argument("results", nargs="+", type=Path, help="conformers_<tag>.json files of benchmark runs")
    parser.add_argument(
        "--pairs",
        nargs="+",
        metavar="METHOD:BASELINE",
        default=None,
        help="pairs to compare (default: every non-RDKit method against every rdkit* method with the same relaxation)",
    )
    parser.add_argument("--delta", type=float, default=1.0, help="COV-R threshold, Å (on the 0.125 Å grid)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")


def add_service_load_arguments(p: argparse.ArgumentParser) -> None:
    """``adjoint-sampling bench service`` and ``python -m benchmarks.service_load``."""
    p.add_argument("--clients", type=int, default=20, help="concurrent clients")
    p.add_argument("--seconds", type=float, default=60.0, help="how long the clients send requests")
    p.add_argument("--conformers", type=int, default=10, help="conformers per request")
    p.add_argument("--checkpoint", type=Path, default=None, help=f"default: {SHIPPED_CONFORMER_CHECKPOINT}")
    p.add_argument("--tiny", action="store_true", help="train and use a tiny plumbing-only checkpoint (seconds)")
    p.add_argument(
        "--energy-model", default="mmff", help="scores the conformers (xtb single points are ~280x slower than mmff)"
    )
    p.add_argument("--sampling-threads", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per sampling thread")
    p.add_argument("--molecules", type=int, default=50, help="distinct SMILES the clients cycle through")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--tag", default="", help="write service_load_TAG.{md,json} (default: service_load.{md,json})")
    p.add_argument("--label", default=None, help="how the report names the model (default: from the checkpoint)")
