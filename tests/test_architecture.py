"""The package's folders are its architecture: layers that import only downward.

README "How it is built" names each layer; this test keeps the tree honest: at most
12 entries at the top of ``src/hybridcheck``, every module under 300 lines, and no
import from a higher layer (an import inside a function counts: it is still a
dependency).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).parents[1] / "src" / "hybridcheck"

LAYERS = [
    "compat",  # every JAX/Flax release difference
    "describe",  # HybridCase, MigrationCase, the subject, strategies, user code
    "seed",  # the founding problem (a plain module the seed case wraps)
    "flaxmodels",  # reading real Flax models: from_nnx / from_linen
    "invariants",  # the families: assertion, check and registry row together
    "report",  # results and how they are printed
    "engine",  # verify, one case's run, search, budget, profiles
    "cases",  # built-in cases and mutants
    "entrypoints",  # cli, matrix, pytest plugin, pairs
]
"""Bottom to top. The top-level ``__init__`` / ``__main__`` (the public face) may
import every layer."""
FACE = {"__init__", "__main__"}
MAX_LINES = 300


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "hybridcheck" or len(parts) == 1:
        return None
    return parts[1]


def _modules() -> list[pathlib.Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: pathlib.Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "hybridcheck":  # from hybridcheck import <submodule>
                found += [(node.lineno, f"hybridcheck.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def test_at_most_twelve_entries_at_the_top():
    entries = sorted(p.name for p in PKG.iterdir() if p.name != "__pycache__")
    assert len(entries) <= 12, entries
    known = (
        {f"{layer}.py" for layer in LAYERS} | {f"{f}.py" for f in FACE} | {"py.typed"}
    )
    for entry in entries:
        assert entry in known or entry in LAYERS, (
            f"src/hybridcheck/{entry} belongs to no layer of tests/test_architecture.py"
        )


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_module_imports_only_downward(path: pathlib.Path):
    rel = path.relative_to(PKG)
    own = rel.parts[0].removesuffix(".py")
    if own in FACE:
        return
    rank = LAYERS.index(own)
    for line, module in _imports(path):
        layer = _layer(module)
        if module == "hybridcheck":
            pytest.fail(f"{rel}:{line} imports the public face `hybridcheck`")
        if layer is None or layer == own:
            continue
        assert layer in LAYERS, f"{rel}:{line} imports {module}: no such layer"
        assert LAYERS.index(layer) < rank, (
            f"{rel}:{line} ({own}) imports {module} ({layer}), a layer above it"
        )


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_module_is_small(path: pathlib.Path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PKG)} has {lines} lines"
