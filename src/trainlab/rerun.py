"""Rerun a recorded stage run from its commit and params, and compare the metrics it logs.

A run records its commit (`git.commit`), whether the tree was dirty, and the exact
resolved config (`config/resolved_params.json`). A rerun checks that commit out in a
temporary `git worktree`, writes the recorded config as its params.yaml and runs
`dvc repro <stage>` there, so the pipeline up to that stage is rebuilt from scratch
with the recorded code. The new runs go to the same tracking store, tagged
`trainlab.rerun_of=<run id>`; the latest value of every metric is then compared
exactly with the original's (timing metrics excluded: they never repeat).

A rerun checks, it does not publish: evaluate's registration is switched off in the
written params (`evaluate.register_model: false`), so the registry and its aliases stay
where they are, unless `register=True` (`trainlab rerun --register`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

import yaml

from trainlab import paths
from trainlab.errors import UserError
from trainlab.tracking.history import get_run
from trainlab.tracking.mlflow_fields import RUN_LABEL_TAG
from trainlab.tracking.run import RERUN_ENV

RESOLVED_PARAMS = "config/resolved_params.json"


@dataclasses.dataclass(frozen=True)
class RecordedRun:
    """What a rerun needs from the original run."""

    run_id: str
    run_name: str
    stage: str
    experiment_id: str
    commit: str
    dirty: bool
    params: dict
    metrics: dict[str, float]
    labelled: bool = False     # run_name is its RUN_LABEL_TAG (the run table shows more)


@dataclasses.dataclass(frozen=True)
class Difference:
    key: str
    original: float | None
    rerun: float | None


@dataclasses.dataclass(frozen=True)
class Comparison:
    """How many metrics were compared, and those that differ (none: identical)."""

    compared: int
    differences: list[Difference]


def read_recorded(client, run_id: str) -> RecordedRun:
    """The original run's stage, commit, resolved params and latest metrics."""
    run = get_run(client, run_id)
    tags = run.data.tags
    stage, commit = tags.get("trainlab.stage"), tags.get("git.commit")
    if not stage:
        raise UserError(f"run {run_id}: has no trainlab.stage tag; only trainlab stage runs can be rerun")
    if not commit or commit in {"unknown", "none"}:
        raise UserError(f"run {run_id}: recorded no git commit (git.commit={commit!r}); cannot rerun it")
    if "optuna.slot" in tags:
        # Its seed and values come from the study: `dvc repro search` with its params would run
        # a new search, and end after all its trials without a run of this name to compare.
        parent = tags.get("mlflow.parentRunId")
        search = f"the whole search with `trainlab rerun {parent}`" if parent else "the search run it belongs to"
        raise UserError(f"run {run_id}: is search trial {tags['optuna.slot']}, which is not rerun alone (its seed "
                        f"and values come from the study); rerun {search}, or fine-tune with its values: "
                        f"put them into params.yaml and run `dvc repro finetune`")
    # A run's own name (RUN_LABEL_TAG), without the experiment a top-level run's name adds;
    # runs recorded before that tag existed have only their name, and so have their reruns.
    name = tags.get(RUN_LABEL_TAG, run.info.run_name)
    return RecordedRun(run_id, name, stage, run.info.experiment_id, commit,
                       tags.get("git.dirty") == "true", _resolved_params(client, run_id), dict(run.data.metrics),
                       RUN_LABEL_TAG in tags)


def _resolved_params(client, run_id: str) -> dict:
    from mlflow.exceptions import MlflowException

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")   # one small JSON file
    with tempfile.TemporaryDirectory(prefix="trainlab-rerun-") as tmp:
        try:
            local = client.download_artifacts(run_id, RESOLVED_PARAMS, tmp)
        except (MlflowException, OSError):
            raise UserError(f"run {run_id}: has no {RESOLVED_PARAMS} artifact; cannot rerun it") from None
        return json.loads(Path(local).read_text())


def rerun(client, run_id: str, in_place: bool = False, warn: Callable[[str], None] = print,
          register: bool = False) -> Comparison:
    """Reproduce run `run_id` and compare the new run's metrics with the original's."""
    recorded = read_recorded(client, run_id)
    if not register:
        recorded = without_registration(recorded)
    repo = _git_root(Path.cwd())
    if recorded.dirty:
        warn(f"warning: run {run_id} was recorded with uncommitted changes (git.dirty: true); "
             f"the rerun uses the clean commit {recorded.commit[:12]}")
    # This environment's tools first: the DVC stages call `trainlab` by name.
    env = {**os.environ, "MLFLOW_TRACKING_URI": client.tracking_uri, RERUN_ENV: run_id,
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    if in_place:
        _rerun_in_place(recorded, repo, env)
    else:
        _rerun_in_worktree(recorded, repo, env)
    return compare_metrics(recorded.metrics, find_rerun(client, recorded).data.metrics)


def without_registration(recorded: RecordedRun) -> RecordedRun:
    """The recorded run with evaluate's model registration switched off (metrics do not depend on it).

    Only evaluate registers, and only its rerun gets the changed param: the runs of the
    other stages log exactly the recorded params.
    """
    evaluate = recorded.params.get("evaluate")
    if recorded.stage != "evaluate" or not isinstance(evaluate, dict) or not evaluate.get("register_model"):
        return recorded
    params = {**recorded.params, "evaluate": {**evaluate, "register_model": False}}
    return dataclasses.replace(recorded, params=params)


def _rerun_in_worktree(recorded: RecordedRun, repo: Path, env: dict[str, str]) -> None:
    """`dvc repro --force <stage>` in a clean worktree of the recorded commit, removed afterwards."""
    _require_commit(repo, recorded.commit)
    tmp = Path(tempfile.mkdtemp(prefix="trainlab-rerun-"))
    tree = tmp / "worktree"
    try:
        _git(repo, "worktree", "add", "--detach", str(tree), recorded.commit)
        project = tree / Path.cwd().resolve().relative_to(repo)   # the DVC project may be a subfolder
        write_params(project / paths.PARAMS, recorded.params)
        # The recorded commit's code, not this checkout's: its src/ comes first (trainlab loads
        # the stages/ beside it; commits before that imported `stages` from the project root).
        env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(project / "src"), str(project),
                                                                  env.get("PYTHONPATH")]))}
        _run([_tool("dvc"), "repro", "--force", recorded.stage], project, env, f"dvc repro {recorded.stage}")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=repo, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def _rerun_in_place(recorded: RecordedRun, repo: Path, env: dict[str, str]) -> None:
    """`trainlab <stage> --params <recorded params>` in this checkout, which must be the recorded commit."""
    head = _git(repo, "rev-parse", "HEAD")
    if head != recorded.commit:
        raise UserError(f"--in-place: HEAD is {head[:12]} but run {recorded.run_id} was recorded at "
                        f"{recorded.commit[:12]}; check it out first or rerun without --in-place")
    if _git(repo, "status", "--porcelain", "--untracked-files=no"):
        raise UserError("--in-place: the working tree has uncommitted changes; commit or stash them first")
    with tempfile.TemporaryDirectory(prefix="trainlab-rerun-") as tmp:
        params_file = write_params(Path(tmp) / paths.PARAMS, recorded.params)
        _run([sys.executable, "-m", "trainlab", recorded.stage, "--params", str(params_file)], Path.cwd(), env,
             f"trainlab {recorded.stage}")


def find_rerun(client, recorded: RecordedRun):
    """The newest run tagged as a rerun of `recorded` with the same run name (label)."""
    name = recorded.run_name.replace("'", "\\'")
    same = f"tags.`{RUN_LABEL_TAG}` = '{name}'" if recorded.labelled else f"attributes.run_name = '{name}'"
    runs = client.search_runs(
        [recorded.experiment_id],
        filter_string=f"tags.`trainlab.rerun_of` = '{recorded.run_id}' and {same}",
        order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise UserError(f"the rerun finished but logged no run named {recorded.run_name!r} "
                        f"tagged trainlab.rerun_of={recorded.run_id}")
    return runs[0]


def is_timing(key: str) -> bool:
    """Wall-clock metrics (epoch/time_s, epoch/samples_per_s) and MLflow's system/* samples differ on every run."""
    return "time" in key or "per_s" in key or key.startswith("system/")


def compare_metrics(original: dict[str, float], rerun: dict[str, float]) -> Comparison:
    """Latest values of every non-timing metric; a key logged by only one run is a difference."""
    keys = sorted(k for k in original.keys() | rerun.keys() if not is_timing(k))
    return Comparison(len(keys), [Difference(k, original.get(k), rerun.get(k)) for k in keys
                                  if not _same(original.get(k), rerun.get(k))])


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))


def write_params(path: Path, params: dict) -> Path:
    """The recorded resolved config as a params file a stage reads."""
    path.write_text("# written by `trainlab rerun`: the recorded resolved params\n"
                    + yaml.safe_dump(params, sort_keys=False))
    return path


def _require_commit(repo: Path, commit: str) -> None:
    found = subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=repo, capture_output=True)
    if found.returncode != 0:
        raise UserError(f"commit {commit[:12]} of the recorded run is not in the repository at {repo}")


def _git_root(cwd: Path) -> Path:
    try:
        return Path(_git(cwd, "rev-parse", "--show-toplevel")).resolve()
    except UserError:
        raise UserError(f"{cwd}: not inside a git repository; run `trainlab rerun` in the project") from None


def _git(cwd: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        problem = (result.stderr.strip().splitlines() or ["failed"])[-1]
        raise UserError(f"git {args[0]}: {problem}")
    return result.stdout.strip()


def _run(cmd: list[str], cwd: Path, env: dict[str, str], what: str) -> None:
    """Run the reproduction with its output on stderr (stdout keeps the verdict); a failure is one line."""
    code = subprocess.run(cmd, cwd=cwd, env=env, stdout=sys.stderr).returncode
    if code != 0:
        raise UserError(f"rerun: `{what}` failed with exit code {code}")


def _tool(name: str) -> str:
    """A console script of this environment (next to the interpreter), else from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)
