"""Helpers the tests and the benchmarks share: the real params.yaml shrunk to a tiny CPU
run, and throwaway projects made from this checkout (its dvc.yaml, src/ and stages/).

They build on the project's own params.yaml and dvc.yaml (never a hand-written copy), so
each training takes seconds. Nothing here downloads anything. Only meaningful in a
checkout installed in editable mode (`make setup`), which is what tests and `bench/` use.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any


ROOT = Path(__file__).resolve().parents[2]   # src/trainlab/testing.py -> the checkout
BIN = Path(sys.executable).parent

# Overrides (dotted keys) that make the default pipeline run in seconds.
SMALL = {
    "data.train_samples": 200,
    "data.source.num_samples": 3000,
    "model.width": 8,
    "model.depth": 2,
    "trainer.batch_size": 64,
    "trainer.threads": 1,
    "trainer.progress": "log",
    "pretrain.epochs": 2,
    "pretrain.batch_size": None,   # trainer.batch_size (the shipped `auto` would take 128)
    "finetune.epochs": 3,
    "finetune.batch_size": 32,
    "search.n_trials": 2,
    "search.epochs": 2,
    "search.top_k": 2,
    "ensemble.top_k": 2,
}


def set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def small_params(**overrides: Any) -> dict:
    """The project's params.yaml with SMALL applied, then `overrides` (use __ for dots)."""
    import yaml   # here, not at the top: tests/test_gpu.py runs on GPU nodes without PyYAML

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in {**SMALL, **{k.replace("__", "."): v for k, v in overrides.items()}}.items():
        set_dotted(params, key, value)
    return params


def write_params(directory: Path, params: dict) -> Path:
    import yaml

    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """The environment a stage sees: this venv's tools first, no inherited tracking server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "trainlab tests"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "tests@trainlab.invalid"
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 900, **env: str) -> subprocess.CompletedProcess:
    """Run a command, capturing output; on unexpected failure show what it printed."""
    result = subprocess.run(cmd, cwd=cwd, env=clean_env(**env), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}"
                             f"\n--- stderr\n{result.stderr[-4000:]}")
    return result


def trainlab(args: list[str], cwd: Path, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    """The real `trainlab` console script of this environment."""
    return run([str(BIN / "trainlab"), *args], cwd, check=check, **env)


def make_project(directory: Path, params: dict | None = None) -> Path:
    """A throwaway copy of the project: dvc.yaml, params, a git repo with DVC initialised."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "dvc.yaml", directory / "dvc.yaml")
    shutil.copy(ROOT / ".dvcignore", directory / ".dvcignore")
    # dvc.yaml lists src/ and stages/ as dependencies: give the copy the real ones.
    for tree in ("src", "stages", "data/own"):   # data/own: the placeholder data.file.* name (a DVC dep)
        shutil.copytree(ROOT / tree, directory / tree, ignore=shutil.ignore_patterns("__pycache__"))
    write_params(directory, params if params is not None else small_params())
    (directory / ".gitignore").write_text("/mlflow.db\n/mlruns/\n/.trainlab/\n/dvc_plots/\n")
    run(["git", "init", "-q", "-b", "main"], directory)
    run([str(BIN / "dvc"), "init", "-q"], directory)
    run(["git", "add", "-A"], directory)
    run(["git", "commit", "-q", "-m", "test project"], directory)
    return directory


def copy_project(source: Path, target: Path) -> Path:
    """An independent copy of a project (to mutate a shared fixture's state safely)."""
    shutil.copytree(source, target, symlinks=True)
    return target


def dvc_metric_values(project: Path) -> dict[str, Any]:
    """Every value `dvc metrics show` shows for the workspace, as {"<file>:<key>": value}."""
    import json

    from trainlab.config import flatten

    shown = json.loads(run([str(BIN / "dvc"), "metrics", "show", "--json"], project).stdout)
    values = {}
    for path, entry in shown[""]["data"].items():
        values.update(flatten(entry.get("data", {}), f"{path}:"))
    return values
