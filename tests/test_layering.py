"""The package's dependency rules, read from the source: layers point one way and no module imports itself
back through others (module-level import cycles make import order matter and hide design knots)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

# What each part of the package may import (besides itself and third-party code).
INFRA = {
    "srlm_fast.config",
    "srlm_fast.device",
    "srlm_fast.io",
    "srlm_fast.distributed",
    "srlm_fast.progress",
}
ALLOWED: dict[str, set[str]] = {
    "srlm_kernels": {"srlm_kernels"},
    "infra": {"infra"},
    "model": {"infra", "model", "srlm_kernels"},
    "engine": {"infra", "model", "engine"},
    "train": {"infra", "model", "train", "srlm_kernels"},
    "eval": {"infra", "eval"},
    # Retrieval reads corpora and searches (infra); dense retrieval embeds with the model; sharded search uses
    # the process-group helpers of srlm_fast.distributed (infra).
    "retrieval": {"infra", "model", "retrieval"},
    "recipe": {"infra", "model", "engine", "train", "eval", "retrieval", "recipe"},
    "cli": {"infra", "model", "engine", "train", "eval", "retrieval", "recipe", "cli", "srlm_kernels"},
}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted((REPO / "srlm_fast").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in sorted((REPO / "srlm_kernels").glob("*.py")):
        name = "srlm_kernels" if path.stem == "__init__" else f"srlm_kernels.{path.stem}"
        mods[name] = path
    return mods


def _layer(module: str) -> str:
    if module.startswith("srlm_kernels"):
        return "srlm_kernels"
    if module in INFRA or module == "srlm_fast":
        return "infra"
    part = module.split(".")[1]
    return "cli" if part in ("cli", "commands", "csrc") else part


def _imports(path: Path, module: str, known: set[str], *, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `from . import x` inside package p is p.x
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], base]).strip(".")
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out |= {n for n in names if n in known and n != module}
    return out


def test_layers_point_one_way() -> None:
    mods = _modules()
    known = set(mods)
    bad = []
    for module, path in mods.items():
        for dep in _imports(path, module, known, top_level_only=False):
            if _layer(dep) not in ALLOWED[_layer(module)]:
                bad.append(f"{module} imports {dep} ({_layer(module)} may not depend on {_layer(dep)})")
    assert not bad, "\n".join(bad)


def test_no_module_level_import_cycles() -> None:
    mods = _modules()
    graph = {m: _imports(p, m, set(mods), top_level_only=True) for m, p in mods.items()}
    # A package's __init__ is imported before its submodules; edges to a package are edges to its __init__.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return [*stack[stack.index(d) :], d]
            if d not in state and (cycle := visit(d)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_package_imports_sit_at_module_tops() -> None:
    """Imports of the package's own modules inside functions hide dependencies (and cycles). The exceptions are
    deliberate: the CLI imports only the command being run, and srlm_kernels imports without Triton (its
    Triton module is loaded on first use)."""
    mods = _modules()
    known = set(mods)
    hidden = []
    for module, path in mods.items():
        if module == "srlm_fast.cli" or module.startswith("srlm_kernels"):
            continue
        inner = _imports(path, module, known, top_level_only=False) - _imports(
            path, module, known, top_level_only=True
        )
        hidden += [f"{module}: {d}" for d in sorted(inner)]
    assert not hidden, "imports inside functions:\n" + "\n".join(hidden)
