"""The floors of the code base, enforced: every package imports only the floors below it, no import cycles.

Floors, bottom to top (see the README's "Architecture"): ``sampler`` (pure math) < ``energy`` <
``molecules``, ``buffer`` < ``training`` < ``inference`` < ``service`` < ``benchmarks`` < ``cli``.
Every import counts, including those inside functions and under ``TYPE_CHECKING``, so a lazy import cannot
hide a back-edge or a cycle.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FLOORS: tuple[frozenset[str], ...] = (
    frozenset({"sampler"}),
    frozenset({"energy"}),
    frozenset({"molecules", "buffer"}),
    frozenset({"training"}),
    frozenset({"inference"}),
    frozenset({"service"}),
    frozenset({"benchmarks"}),
    frozenset({"cli"}),
)
LEVEL = {pkg: level for level, floor in enumerate(FLOORS) for pkg in floor}
PACKAGES = sorted(LEVEL)
MATH_ALLOWED = {"torch", "torch_geometric", "e3nn", "sampler", "__future__"}
HTTP = {"fastapi", "uvicorn", "starlette"}


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported_modules(path: Path, module: str) -> set[str]:
    """Every module named by an import statement anywhere in the file (absolute names)."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                prefix = ".".join([*base, node.module] if node.module else base)
            else:
                prefix = node.module or ""
            names.add(prefix)
            names |= {f"{prefix}.{a.name}" for a in node.names}
    return names


def module_graph(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, set[str]]:
    """Project module -> the project modules it imports (``from pkg import mod`` resolves to ``pkg.mod``)."""
    files = {_module_name(p, root): p for pkg in packages for p in (root / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        graph[module] = {name for name in _imported_modules(path, module) if name in files and name != module}
    return graph


def back_edges(graph: Mapping[str, set[str]], level: Mapping[str, int]) -> list[str]:
    """Imports that go sideways or up a floor: ``a -> b`` where ``b``'s package is not strictly below ``a``'s."""
    bad = []
    for a, targets in graph.items():
        pa = a.split(".")[0]
        for b in targets:
            pb = b.split(".")[0]
            if pa != pb and level[pb] >= level[pa]:
                bad.append(f"{a} -> {b}")
    return sorted(bad)


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each a cycle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_top_level_package_has_a_floor() -> None:
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert on_disk == set(PACKAGES), f"packages without a floor: {on_disk - set(PACKAGES)}"


def test_no_package_imports_a_floor_above_or_beside_it() -> None:
    assert back_edges(module_graph(), LEVEL) == []


def test_no_import_cycles_between_modules() -> None:
    assert cycles(module_graph()) == []


def _write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_deliberate_back_import_is_caught(tmp_path: Path) -> None:
    """A synthetic tree: an energy module lazily importing the CLI, and two CLI modules importing each other."""
    _write(
        tmp_path,
        {
            "sampler/__init__.py": "",
            "sampler/sde.py": "import torch\n",
            "energy/__init__.py": "",
            "energy/xtb.py": "from sampler import sde\n\ndef f():\n    from cli.main import main\n",
            "cli/__init__.py": "",
            "cli/main.py": "from . import common\nfrom energy.xtb import f\n",
            "cli/common.py": "def g():\n    import cli.main\n",
        },
    )
    level = {"sampler": 0, "energy": 1, "cli": 2}
    graph = module_graph(tmp_path, level)
    assert graph["energy.xtb"] == {"sampler", "sampler.sde", "cli.main"}
    assert back_edges(graph, level) == ["energy.xtb -> cli.main"]
    assert cycles(graph) == [["cli.common", "cli.main", "energy.xtb"]]
    # and the clean version of the same tree passes
    _write(tmp_path, {"energy/xtb.py": "from sampler import sde\n", "cli/common.py": "X = 1\n"})
    graph = module_graph(tmp_path, level)
    assert back_edges(graph, level) == [] and cycles(graph) == []


def _third_party_imports(path: Path) -> set[str]:
    return {name.split(".")[0] for name in _imported_modules(path, _module_name(path)) if name}


def test_sampler_imports_only_math() -> None:
    stdlib = set(sys.stdlib_module_names)
    bad = {}
    for path in (ROOT / "sampler").rglob("*.py"):
        extra = {n for n in _third_party_imports(path) if n not in MATH_ALLOWED and n not in stdlib}
        if extra:
            bad[str(path.relative_to(ROOT))] = sorted(extra)
    assert not bad, f"sampler/ imports outside the math layer: {bad}"


@pytest.mark.parametrize("pkg", ["sampler", "energy", "molecules", "buffer", "training", "inference"])
def test_only_service_knows_http(pkg: str) -> None:
    for path in (ROOT / pkg).rglob("*.py"):
        assert not _third_party_imports(path) & HTTP, path


def test_packaging_names_every_package() -> None:
    """pyproject's package and mypy lists and the Dockerfile's COPY lines name exactly the floors."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert sorted(pyproject["tool"]["setuptools"]["packages"]) == PACKAGES
    assert sorted(pyproject["tool"]["mypy"]["files"]) == PACKAGES
    copied = set(re.findall(r"^COPY (\w+) \./\1$", (ROOT / "Dockerfile").read_text(), flags=re.M))
    assert copied - {"checkpoints"} == set(PACKAGES)
    assert pyproject["project"]["scripts"]["adjoint-sampling"] == "cli.main:main"
