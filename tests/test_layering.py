"""sampler/ is the pure math: it imports only torch, torch-geometric, e3nn, the stdlib and itself."""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {"torch", "torch_geometric", "e3nn", "sampler", "__future__"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_sampler_imports_only_math() -> None:
    stdlib = set(sys.stdlib_module_names)
    bad = {}
    for path in (ROOT / "sampler").rglob("*.py"):
        extra = {n for n in _imports(path) if n not in ALLOWED and n not in stdlib}
        if extra:
            bad[str(path.relative_to(ROOT))] = sorted(extra)
    assert not bad, f"sampler/ imports outside the math layer: {bad}"


def test_only_service_knows_http() -> None:
    for pkg in ("sampler", "energy", "buffer"):
        for path in (ROOT / pkg).rglob("*.py"):
            assert not _imports(path) & {"fastapi", "uvicorn", "starlette"}, path
