"""The command line starts light: building the parser, ``--help``, ``SUBCOMMAND --help`` and argument errors import
no torch, RDKit, numpy or benchmark code (only the chosen subcommand's handler imports what it needs).

Each case runs in a fresh interpreter, so a heavy import reintroduced anywhere on the parser's path fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

HEAVY = ("torch", "torch_geometric", "e3nn", "rdkit", "numpy", "scipy")
LIGHT_BENCHMARK_MODULES = {"benchmarks", "benchmarks.options"}

_PROBE = """
import json, sys
import cli.main
code = None
try:
    cli.main.main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & {heavy!r})
bench = sorted(m for m in sys.modules if m.split(".")[0] == "benchmarks" and m not in {light!r})
print(json.dumps({{"code": code, "heavy": heavy, "benchmarks": bench}}))
"""


def _probe(*argv: str) -> dict[str, object]:
    script = _PROBE.format(heavy=set(HEAVY), light=LIGHT_BENCHMARK_MODULES)
    proc = subprocess.run([sys.executable, "-c", script, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (("--help",), 0),
        (("bench", "conformers", "--help"), 0),
        (("sample", "--help"), 0),
        (("bench", "conformers", "--datasets", "bogus"), 2),
        (("bench", "compare"), 2),
    ],
    ids=["help", "bench-conformers-help", "sample-help", "bad-choice", "missing-argument"],
)
def test_parser_imports_nothing_heavy(argv: tuple[str, ...], code: int) -> None:
    result = _probe(*argv)
    assert result["code"] == code
    assert result["heavy"] == [], f"{' '.join(argv)} imported {result['heavy']}"
    assert result["benchmarks"] == [], f"{' '.join(argv)} imported {result['benchmarks']}"


def test_build_parser_alone_imports_nothing_heavy() -> None:
    script = (
        "import sys, cli.main as m; m.build_parser(); "
        f"print(sorted({{x.split('.')[0] for x in sys.modules}} & {set(HEAVY)!r}))"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_light_method_names_are_the_registry() -> None:
    """``bench conformers --help`` lists :data:`benchmarks.options.METHOD_NAMES`; the registry must agree."""
    from benchmarks.methods import BUILT_IN_METHODS
    from benchmarks.options import METHOD_NAMES

    assert len(set(METHOD_NAMES)) == len(METHOD_NAMES)
    assert sorted(METHOD_NAMES) == sorted(BUILT_IN_METHODS), "a built-in method belongs in METHOD_NAMES too"
