"""The layering of src/trainlab, read from the code: no import circle; `engine/` builds on
`config`, `errors` and `io` only; `tracking/` (the door to MLflow) on those plus `paths`,
`processes` and the engine's hook interface.

Imports are read with `ast` (functions' lazy imports included; imports under
`if TYPE_CHECKING:` are annotations only, never run, and left out), and the checker is
itself tested on a snippet.
"""

from __future__ import annotations

import ast
from pathlib import Path

from trainlab.testing import ROOT

SRC = ROOT / "src"

# The package root holds only __version__ (tracking tags runs with it).
ROOT_PACKAGE = "trainlab"
ALLOWED = {
    "trainlab.engine": {"trainlab.engine", "trainlab.config", "trainlab.errors", "trainlab.io"},
    "trainlab.tracking": {"trainlab.tracking", "trainlab.config", "trainlab.errors", "trainlab.io",
                          "trainlab.paths", "trainlab.processes", "trainlab.engine.hooks", ROOT_PACKAGE},
}


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Project modules `module` imports at run time (names resolved to the module they are in)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == ROOT_PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] == ROOT_PACKAGE:
                # `from trainlab.engine import hooks` names a module; `... import Hook` a name in one
                found.update(f"{name}.{a.name}" if f"{name}.{a.name}" in known else name for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    found.discard(module)
    return found


def import_graph(src: Path) -> dict[str, set[str]]:
    files = {module_name(p, src): p for p in sorted(src.rglob("*.py"))}
    return {name: imported(path.read_text(), name, path.name == "__init__.py", set(files))
            for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import circles, each as the path that closes it (a package's __init__ counts as a module)."""
    found, done = [], set()

    def walk(node: str, stack: list[str]) -> None:
        if node in stack:
            found.append(stack[stack.index(node):] + [node])
            return
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            walk(nxt, stack + [node])
        done.add(node)

    for start in sorted(graph):
        walk(start, [])
    return found


def broken_rules(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, deps in sorted(graph.items()):
        for layer, allowed in ALLOWED.items():
            if module == layer or module.startswith(layer + "."):
                found += [f"{module} imports {dep}" for dep in sorted(deps)
                          if not any(dep == ok or (ok != ROOT_PACKAGE and dep.startswith(ok + ".")) for ok in allowed)]
    return found


def test_the_checker_sees_lazy_imports_and_skips_type_checking_blocks(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "trainlab" / "engine").mkdir(parents=True)
    (src / "trainlab" / "tracking").mkdir()
    for name in ("__init__", "errors", "models", "engine/__init__", "tracking/__init__"):
        (src / "trainlab" / f"{name}.py").write_text("")
    (src / "trainlab" / "engine" / "loop.py").write_text(
        "def f():\n    from trainlab.tracking import run\n")
    (src / "trainlab" / "tracking" / "run.py").write_text(
        "from typing import TYPE_CHECKING\nfrom ..errors import UserError\n"
        "if TYPE_CHECKING:\n    from trainlab.models import Classifier\n"
        "from trainlab.engine.loop import f\n")
    graph = import_graph(src)
    assert graph["trainlab.tracking.run"] == {"trainlab.errors", "trainlab.engine.loop"}
    assert broken_rules(graph) == ["trainlab.engine.loop imports trainlab.tracking.run",
                                   "trainlab.tracking.run imports trainlab.engine.loop"]
    assert cycles(graph) == [["trainlab.engine.loop", "trainlab.tracking.run", "trainlab.engine.loop"]]


def test_no_import_circle_in_src() -> None:
    assert cycles(import_graph(SRC)) == []


def test_engine_and_tracking_import_only_the_layers_below_them() -> None:
    assert broken_rules(import_graph(SRC)) == []
