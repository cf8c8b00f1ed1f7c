"""The layering of src/trainlab, read from the code: no import circle (annotation-only
imports included); `engine/` builds on `config`, `errors` and `io` only; `tracking/` (the
door to MLflow) is a leaf that imports those plus `hashing`, `paths`, `processes` and the
stage table; and
what ensemble and evaluate read of a trained model (data, models, held-out predictions,
serving, calibration) imports neither the engine nor the training layer.

Imports are read with `ast` (functions' lazy imports included). The layer rules leave
out imports under `if TYPE_CHECKING:` (annotations only, never run); the circle check
counts them, since a circle through an annotation is still two modules that need each
other. The checker is itself tested on a snippet.
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
    "trainlab.tracking": {"trainlab.tracking", "trainlab.config", "trainlab.errors", "trainlab.hashing",
                          "trainlab.io", "trainlab.paths", "trainlab.processes", "trainlab.stage_registry",
                          ROOT_PACKAGE},
    # Read by `trainlab --help` and by every layer: paths only.
    "trainlab.stage_registry": {"trainlab.stage_registry", "trainlab.paths"},
}
# Layers that must not reach the training loop: ensemble and evaluate depend on them, and an
# edit to how models are trained must not rerun (or be able to change) those stages.
BELOW_TRAINING = ("trainlab.data", "trainlab.models", "trainlab.heldout", "trainlab.serving",
                  "trainlab.calibration", "trainlab.ensemble", "trainlab.evaluation", "trainlab.hashing")
TRAINING_LAYERS = ("trainlab.engine", "trainlab.training")


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported(source: str, module: str, is_package: bool, known: set[str], type_only: bool = False) -> set[str]:
    """Project modules `module` imports at run time (names resolved to the module they are in),
    and with `type_only` those it imports for annotations too."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node) and not type_only:
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


def import_graph(src: Path, type_only: bool = False) -> dict[str, set[str]]:
    files = {module_name(p, src): p for p in sorted(src.rglob("*.py"))}
    return {name: imported(path.read_text(), name, path.name == "__init__.py", set(files), type_only)
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
        if _within(module, BELOW_TRAINING):
            found += [f"{module} imports {dep}" for dep in sorted(deps) if _within(dep, TRAINING_LAYERS)]
    return found


def _within(module: str, layers: tuple[str, ...]) -> bool:
    return any(module == layer or module.startswith(layer + ".") for layer in layers)


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
    (src / "trainlab" / "heldout.py").write_text("from trainlab.engine.loop import f\n")
    (src / "trainlab" / "errors.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from trainlab.models import M\n")
    (src / "trainlab" / "models.py").write_text("from trainlab.errors import E\n")
    graph = import_graph(src)
    assert graph["trainlab.tracking.run"] == {"trainlab.errors", "trainlab.engine.loop"}
    assert broken_rules(graph) == ["trainlab.engine.loop imports trainlab.tracking.run",
                                   "trainlab.heldout imports trainlab.engine.loop",
                                   "trainlab.tracking.run imports trainlab.engine.loop"]
    assert cycles(graph) == [["trainlab.engine.loop", "trainlab.tracking.run", "trainlab.engine.loop"]]
    # errors -> models only for annotations: a circle all the same.
    assert cycles(import_graph(src, type_only=True)) == [
        ["trainlab.engine.loop", "trainlab.tracking.run", "trainlab.engine.loop"],
        ["trainlab.errors", "trainlab.models", "trainlab.errors"]]


def test_no_import_circle_in_src_annotations_included() -> None:
    assert cycles(import_graph(SRC, type_only=True)) == []


def test_engine_tracking_and_what_evaluate_reads_import_only_the_layers_below_them() -> None:
    assert broken_rules(import_graph(SRC)) == []
