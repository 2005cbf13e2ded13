"""The package's shape, checked: no import cycle, no module over 400 lines, and none of
keras_cv's private modules imported (keras_cv 0.9 is its last release)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "sdgen"
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The sdgen modules ``name`` imports anywhere in its code (functions too, so a lazy
    import back is a cycle as well)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # `from . import convert` names a module
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    return {module for module in found if module in modules and module != name}


def _runtime_nodes(tree):
    """Every node, except those under ``if TYPE_CHECKING:`` (never imported at run time)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and getattr(child.test, "id", None) == "TYPE_CHECKING":
                stack.extend(child.orelse)
            else:
                stack.append(child)


def test_no_import_cycle():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    state: dict[str, str] = {}
    cycles = []

    def visit(name, trail):
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                cycles.append(" -> ".join([*trail[trail.index(target) :], target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)


def test_the_import_check_sees_a_cycle(tmp_path, monkeypatch):
    """The check above can fail: a lazy import back from registry into store (the circle
    this package once had) is found."""
    modules = _modules()
    registry = PACKAGE / "registry.py"
    copy = tmp_path / "registry.py"
    copy.write_text(registry.read_text() + "\n\ndef _back():\n    from .store import store_dir\n")
    edges = _imports("sdgen.registry", copy, modules)
    assert "sdgen.store" in edges
    assert "sdgen.registry" in _imports("sdgen.store", modules["sdgen.store"], modules)


def test_no_module_is_over_400_lines():
    long = {
        name: lines
        for name, path in _modules().items()
        if (lines := len(path.read_text("utf-8").splitlines())) > MAX_LINES
    }
    assert not long, long


def test_no_private_keras_cv_module_is_imported():
    private = {name: found for name, path in _modules().items() if (found := _private(path))}
    assert not private, private


def _private(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
    return {name for name in names if name.startswith("keras_cv.src")}
