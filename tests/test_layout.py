"""The layout shows the architecture: imports only point down (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "tropref"

# tropref/network/ from the bottom up: each module may import only those before it.
NETWORK_ORDER = [
    "layers",
    "windows",
    "kinds",
    "shapes",
    "forward",
    "graph",
    "segments",
    "flatten",
    "bounds",
    "structure",
    "moments",
    "_after_relu",
    "_keep",
    "widths",
    "certificate",
    "local",
    "report",
    "_reporting",
    "_progress",
    "rewrite",
    "coupled",
    "compress",
]

# tropref/experiments/ from the bottom up.
EXPERIMENTS_ORDER = ["data", "models", "userdata", "report", "sweeps", "certcheck", "demos", "cli"]


def _imports(path: Path) -> set[str]:
    """Absolute names of the tropref modules that ``path`` imports (at run time, not under
    ``if TYPE_CHECKING:``)."""
    parts = path.relative_to(ROOT.parent).with_suffix("").parts[:-1]
    package = ".".join(("tropref", "adapters") if parts == ("adapters",) else parts)
    tree = ast.parse(path.read_text())
    type_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for n in ast.walk(node)
    }
    out = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.add(name)
            out.update(f"{name}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {n for n in out if n == "tropref" or n.startswith("tropref.")}


@pytest.mark.parametrize(
    ("package", "module"),
    [("network", m) for m in NETWORK_ORDER] + [("experiments", m) for m in EXPERIMENTS_ORDER],
)
def test_modules_import_only_those_below(package, module):
    order = NETWORK_ORDER if package == "network" else EXPERIMENTS_ORDER
    above = set(order[order.index(module) + 1 :])
    for name in _imports(ROOT / package / f"{module}.py"):
        parts = name.split(".")
        if parts[:2] == ["tropref", package] and len(parts) > 2:
            assert parts[2] not in above, f"tropref.{package}.{module} imports {name}, which is above it"


@pytest.mark.parametrize(("package", "order"), [("network", NETWORK_ORDER), ("experiments", EXPERIMENTS_ORDER)])
def test_every_module_is_placed(package, order):
    on_disk = {p.stem for p in (ROOT / package).glob("*.py")} - {"__init__"}
    assert on_disk == set(order)


def test_adapters_do_not_import_the_application():
    for path in (ROOT.parent / "adapters").glob("*.py"):
        for name in _imports(path):
            assert not name.startswith("tropref.experiments"), f"adapters/{path.name} imports {name}"


def test_levels_import_downward():
    """The core below the application never imports the application level or the adapters."""
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] == "experiments":
            continue
        for name in _imports(path):
            assert not name.startswith(("tropref.experiments", "tropref.adapters")), f"{rel} imports {name}"
        if rel.parts[0] != "network" and rel.parts[0] not in ("__init__.py",):
            for name in _imports(path):
                assert not name.startswith("tropref.network"), f"{rel} (below the network level) imports {name}"
