"""The package in layers: each subpackage imports only from itself and the layers below it, no
module imports itself back through others, and every module can be read in one sitting."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lib" / "squeezestudy"
# Bottom to top. A module may import from its own layer and any layer before it.
LAYERS = ("core", "kernels", "data", "models", "training", "runs", "compression", "analysis", "speed",
          "batch", "report", "notebook", "cli", "__main__")
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The package's modules `path` imports anywhere in it (functions included): for `from X import
    name`, X.name when that is a module, else X."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base not in known:
                continue
            subs = {f"{base}.{a.name}" for a in node.names} & known
            found.update(subs or {base})
            if len(subs) < len(node.names):
                found.add(base)
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(path, set(mods)) for name, path in mods.items()}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the package's own __init__ (its version)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph, as a closed path, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_import_reader_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "squeezestudy"
    (pkg / "core").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "__init__.py").write_text("")
    (pkg / "core" / "a.py").write_text("def f():\n    from squeezestudy.training import loop\n")
    (pkg / "core" / "b.py").write_text("from . import a\nfrom .a import f\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    known = {"squeezestudy", "squeezestudy.core", "squeezestudy.core.a", "squeezestudy.core.b",
             "squeezestudy.training", "squeezestudy.training.loop"}
    assert imports_of(pkg / "core" / "a.py", known) == {"squeezestudy.training.loop"}
    assert imports_of(pkg / "core" / "b.py", known) == {"squeezestudy.core.a"}


def test_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_subpackage_is_a_known_layer():
    found = {layer(m) for m in modules()} - {None}
    assert found <= set(LAYERS), f"a layer missing from LAYERS: {sorted(found - set(LAYERS))}"


def test_imports_go_down_the_layers():
    wrong = [f"{m} imports {d} ({layer(m)} is below {layer(d)})"
             for m, deps in graph().items() for d in sorted(deps)
             if layer(m) and layer(d) and LAYERS.index(layer(d)) > LAYERS.index(layer(m))]
    assert not wrong, "\n".join(wrong)


def test_core_imports_no_other_layer():
    out = {d for m, deps in graph().items() if layer(m) == "core" for d in deps if layer(d) != "core"}
    assert not out


@pytest.mark.parametrize("name", sorted(modules()))
def test_module_fits_one_sitting(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name}: {lines} lines; split it (at most {MAX_LINES})"


@pytest.mark.parametrize("name", sorted(m for m, p in modules().items() if p.name == "__init__.py"))
def test_every_package_says_what_it_holds(name):
    assert ast.get_docstring(ast.parse(modules()[name].read_text())), f"{name}/__init__.py has no docstring"


def test_every_import_of_the_package_names_something_that_exists():
    """Function-level imports run only when their function does: a name moved away (as
    `pending_training` from batch.runner to batch.manifest) fails here, not in a user's command."""
    import importlib
    import importlib.util

    missing = []
    for name, path in modules().items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if not base.startswith("squeezestudy"):
                continue
            module = importlib.import_module(base)
            for alias in node.names:
                found = hasattr(module, alias.name) or importlib.util.find_spec(f"{base}.{alias.name}")
                if not found:
                    missing.append(f"{name}: from {base} import {alias.name}")
    assert not missing, "\n".join(missing)
