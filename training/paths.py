"""Where the project's files live by default: the one home of these paths for every floor above.

The shipped checkpoints (the torsional conformer model, the Cartesian one, DW-4) sit next to the code
(``checkpoints/``); the benchmark data in the sibling
``shared/data`` checkout; benchmark reports in ``benchmarks/results``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "DEFAULT_DATA",
    "REPO_ROOT",
    "RESULTS_DIR",
    "SHIPPED_CARTESIAN_CHECKPOINT",
    "SHIPPED_CONFORMER_CHECKPOINT",
    "SHIPPED_SYNTHETIC_CHECKPOINT",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
SHIPPED_CONFORMER_CHECKPOINT = REPO_ROOT / "checkpoints" / "torsional.pt"
"""The product's default conformer model: the torsional one."""
SHIPPED_CARTESIAN_CHECKPOINT = REPO_ROOT / "checkpoints" / "conformers.pt"
"""The Cartesian conformer model (selectable with ``--checkpoint``)."""
SHIPPED_SYNTHETIC_CHECKPOINT = REPO_ROOT / "checkpoints" / "dw4.pt"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
