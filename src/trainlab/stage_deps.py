"""The project code each DVC stage runs, computed from the imports; `dvc.yaml` must list it.

A stage's command is `trainlab <stage>`: `trainlab/cli.py` imports `stages/<stage>.py`,
which imports `trainlab` modules, which import others. Every project file in that
closure can change the stage's results, so it must be a `deps` entry, or `dvc repro`
reports "didn't change, skipping" over stale outputs. Imports inside functions count
too (the stages import lazily), so does every package `__init__.py` on the way, and so
does a module a command line in the code starts with `-m` (the DDP relaunch).

    python -m trainlab.stage_deps            # the code deps of every stage, as dvc.yaml lists them
    python -m trainlab.stage_deps --check    # exit 1 and name each stage whose deps differ
    python -m trainlab.stage_deps --write    # rewrite the code deps in dvc.yaml (comments kept)

A package folder is listed whole when the stage imports every module in it, else file
by file: precise, so editing `ensemble/combine.py` reruns ensemble and evaluate, not pretrain.
tests/test_dvc_deps.py runs the check.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
# Top-level packages that are project code (everything else is a third-party import).
PACKAGES = {"trainlab": ROOT / "src" / "trainlab", "stages": ROOT / "stages"}
# What `trainlab <stage>` runs first: the console script's module, then the stage's.
ENTRY = "trainlab.cli"
CODE_ROOTS = ("src/", "stages/")


def module_file(name: str) -> Path | None:
    """The file of a project module (`trainlab.models.store`), or None if it is not ours."""
    top, *rest = name.split(".")
    if top not in PACKAGES:
        return None
    base = PACKAGES[top].joinpath(*rest)
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path, module: str) -> set[str]:
    """Every module name `path` may import, at any depth (functions included)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:   # relative import: resolve against this module's package
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            # `from trainlab import paths` imports the submodule trainlab.paths.
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, (ast.List, ast.Tuple)):
            names.update(run_as_main(node.elts))
    return names


def run_as_main(elements: list[ast.expr]) -> set[str]:
    """Modules a command line literal starts with `-m` (the torchrun relaunch runs `-m trainlab`)."""
    words = [e.value if isinstance(e, ast.Constant) and isinstance(e.value, str) else None for e in elements]
    started = {module for flag, module in zip(words, words[1:]) if flag == "-m" and module}
    # `-m package` runs package/__main__.py.
    return started | {f"{module}.__main__" for module in started}


def with_parents(name: str) -> list[str]:
    """`a.b.c` -> a, a.b, a.b.c: importing a module runs every parent package's __init__."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def closure(stage: str) -> set[Path]:
    """Every project file `trainlab <stage>` may import, transitively."""
    todo, seen, files = [ENTRY, f"stages.{stage}"], set(), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        if path is None:
            continue
        files.add(path)
        for imported in imported_names(path, name):
            todo.extend(with_parents(imported))
    return files


def python_files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*.py") if "__pycache__" not in p.parts}


def as_deps(files: set[Path]) -> list[str]:
    """The fewest dvc.yaml paths covering exactly `files`: a folder whose every module is in it, else files."""
    deps: list[str] = []

    def visit(folder: Path) -> None:
        inside = python_files(folder)
        if not inside & files:
            return
        if inside <= files:
            deps.append(folder.relative_to(ROOT).as_posix())
            return
        for child in sorted(folder.iterdir()):
            if child.is_dir() and child.name != "__pycache__":
                visit(child)
            elif child in files:
                deps.append(child.relative_to(ROOT).as_posix())

    for folder in PACKAGES.values():
        visit(folder)
    return sorted(deps)


def declared_code_deps(dvc_yaml: Path = ROOT / "dvc.yaml") -> dict[str, list[str]]:
    """Each stage's deps in dvc.yaml that are project code (under src/ or stages/)."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    return {name: sorted(d for d in stage.get("deps", []) if d.startswith(CODE_ROOTS))
            for name, stage in stages.items()}


def differences(dvc_yaml: Path = ROOT / "dvc.yaml") -> dict[str, tuple[list[str], list[str]]]:
    """stage -> (missing from dvc.yaml, listed but not what the stage imports) for each stage that differs."""
    found = {}
    for stage, declared in declared_code_deps(dvc_yaml).items():
        wanted = as_deps(closure(stage))
        missing, extra = sorted(set(wanted) - set(declared)), sorted(set(declared) - set(wanted))
        if missing or extra:
            found[stage] = (missing, extra)
    return found


def write_deps(dvc_yaml: Path = ROOT / "dvc.yaml") -> None:
    """Replace each stage's code deps in dvc.yaml with its closure; every other line stays as written."""
    import re

    lines, out, stage, in_deps, done = dvc_yaml.read_text().split("\n"), [], None, False, False
    for line in lines:
        if match := re.match(r"^  (\w[\w-]*):\s*$", line):
            stage, in_deps = match.group(1), False
        elif re.match(r"^    deps:\s*$", line):
            in_deps, done = True, False
        elif in_deps and not line.startswith("      "):
            in_deps = False
        if in_deps and re.match(r"^      - (src|stages)/", line):
            if not done:   # the code deps go where the first one was
                out.extend(f"      - {dep}" for dep in as_deps(closure(stage)))
                done = True
            continue
        out.append(line)
    dvc_yaml.write_text("\n".join(out))


def main(argv: list[str]) -> int:
    if "--write" in argv:
        write_deps()
        argv = ["--check"]
    if "--check" in argv:
        found = differences()
        for stage, (missing, extra) in found.items():
            print(f"dvc.yaml: stage {stage}: add {missing or 'nothing'}, remove {extra or 'nothing'}")
        return 1 if found else 0
    for stage in declared_code_deps():
        print(f"{stage}:\n" + "".join(f"  - {dep}\n" for dep in as_deps(closure(stage))), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
