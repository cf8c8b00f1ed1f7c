"""Hyperparameter search through the real `trainlab search` stage, in copies of the
prepared project: every sampler, pruning, reproducibility, study identity, recovery
after SIGKILL, parallel workers, MLflow child runs, the space check and divergence.
Plus grid vs random search on a synthetic objective (bench/grid_vs_random.py).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import signal
import statistics
import subprocess
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from trainlab.config import validate
from trainlab.config.schema import SpaceParam
from trainlab.search import grid
from trainlab.search.identity import study_name
from trainlab.search.space import suggest
from trainlab.search.study import ProposalSampler, history, propose
from trainlab.testing import BIN, ROOT, clean_env, copy_project, trainlab, write_params

from helpers.search import (LR, TINY_SPACE, by_slot, counted, killed, metrics, mlflow_runs, new_project,
                            only_study, search_params, studies, wait_for)
from helpers.tracking import label


def search_children(project: Path) -> tuple[Any, list]:
    """The (single) top-level search run and its child runs."""
    runs = mlflow_runs(project)
    parents = [r for r in runs if label(r) == "search" and "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    parent = parents[0]
    return parent, [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


def parent_pid(project: Path) -> str:
    return search_children(project)[0].data.tags["trainlab.pid"]


@pytest.fixture(scope="module")
def searched(prepared_project: Path, tmp_path_factory: pytest.TempPathFactory):
    """Run `trainlab search` once per distinct (name, params) in this module; cached."""
    cache: dict[str, Path] = {}

    def run_once(name: str, params: dict) -> Path:
        if name not in cache:
            project = new_project(prepared_project, tmp_path_factory.mktemp(name) / "project", params)
            trainlab(["search"], project)
            cache[name] = project
        return cache[name]
    return run_once


# ------------------------------------------------------------------------------ samplers
@pytest.mark.parametrize("sampler", ["grid", "random", "tpe"])
def test_sampler_runs_a_study_end_to_end(searched, sampler: str) -> None:
    params = search_params(search__sampler=sampler)
    project = searched(sampler, params)
    trials = only_study(project)
    slots = by_slot(trials)
    assert sorted(slots) == [0, 1, 2]
    assert all(state == "COMPLETE" for _, _, state in slots.values())
    space = {k: SpaceParam(**v) for k, v in TINY_SPACE.items()}
    if sampler == "grid":
        # Exactly the declared grid points, in grid() order, one per slot.
        assert [slots[s][0] for s in range(3)] == grid(space, 2)[:3]
    else:
        for values, _, _ in slots.values():
            assert 1.0e-3 <= values[LR] <= 1.0e-2 and values["model.dropout"] in (0.0, 0.2)
        assert len({v[LR] for v, _, _ in slots.values()}) == 3
    # The stage's outputs agree with the study.
    best_slot = min(slots, key=lambda s: (slots[s][1], s))   # val/loss: lower is better
    found = metrics(project)
    assert "best/slot" not in found and found["best/val/loss"] == slots[best_slot][1]   # bookkeeping: a tag
    assert search_children(project)[0].data.tags["optuna.best_slot"] == str(best_slot)
    assert found["trials/complete"] == 3 and found["trials/pruned"] == found["trials/failed"] == 0
    best_yaml = yaml.safe_load((project / "reports/search/best_params.yaml").read_text())
    assert best_yaml == slots[best_slot][0]
    members = json.loads((project / "models/search/members.json").read_text())
    assert [m["slot"] for m in members] == sorted(slots, key=lambda s: (slots[s][1], s))[:2]
    assert all((project / "models/search" / m["file"]).is_file() for m in members)


@pytest.mark.parametrize("sampler", ["grid", "tpe"])
def test_trials_are_child_runs_of_the_search_run(searched, sampler: str) -> None:
    project = searched(sampler, search_params(search__sampler=sampler))
    parent, children = search_children(project)
    assert parent.info.status == "FINISHED"
    assert sorted(r.data.tags["optuna.slot"] for r in children) == ["0", "1", "2"]
    assert all(r.info.status == "FINISHED" and r.data.tags["optuna.state"] == "COMPLETE" for r in children)
    slots = by_slot(only_study(project))
    for run in children:
        slot = int(run.data.tags["optuna.slot"])
        # The run table says what each trial is: its slot and the values it tried.
        values = slots[slot][0]
        assert run.info.run_name == (f"search trial {slot} (lr={values[LR]:.3g}, "
                                     f"dropout={values['model.dropout']:.3g})")
        assert run.data.metrics["final.val.loss"] == pytest.approx(slots[slot][1])
        assert float(run.data.params[LR]) == pytest.approx(slots[slot][0][LR])


def test_same_seed_proposes_the_same_trials(searched) -> None:
    params = search_params(search__sampler="tpe")
    first = by_slot(only_study(searched("tpe", params)))
    second = by_slot(only_study(searched("tpe-again", params)))
    assert [first[s][0] for s in sorted(first)] == [second[s][0] for s in sorted(second)]
    assert [first[s][1] for s in sorted(first)] == [second[s][1] for s in sorted(second)]


def proposals(sampler: str, seed: int, n: int = 7) -> list[dict]:
    """What trainlab proposes for TINY_SPACE, slot after slot, in an in-memory ask/tell loop
    (7 slots: TPE's first 5 are its seeded random start-up, the last 2 learn from them)."""
    params = validate(search_params(search__sampler=sampler, search__seed=seed, search__n_trials=n))
    study = optuna.create_study(sampler=ProposalSampler())
    for slot in range(n):
        trial = study.ask()
        trial.set_user_attr("slot", slot)
        study.sampler.set_proposal(lambda: propose(params, slot, history(study)))
        values = suggest(trial, params.search.space)
        study.tell(trial, abs(values[LR] - 3.0e-3) + values["model.dropout"])
    return [t.params for t in study.trials]


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_search_seed_decides_the_proposals(sampler: str) -> None:
    assert proposals(sampler, seed=0) == proposals(sampler, seed=0)
    assert proposals(sampler, seed=0) != proposals(sampler, seed=1)


def test_the_study_plots_are_the_same_on_every_rerun(tmp_path: Path) -> None:
    from trainlab.search.summary import write_plots

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("lr", 1e-3, 1e-2, log=True) * t.suggest_float("dropout", 0.0, 0.3),
                   n_trials=8)
    drawn = []
    for rerun in ("a", "b"):
        (tmp_path / rerun).mkdir()
        written = write_plots(study, tmp_path / rerun)
        drawn.append({path.name: path.read_bytes() for path in written})
    assert "param_importances.png" in drawn[0]
    assert drawn[0] == drawn[1]   # fANOVA's forest is seeded, so the importances do not move


def test_unchanged_params_resume_and_a_new_space_starts_a_new_study(searched, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    params = search_params(search__sampler="random")
    project = copy_project(searched("random", params), tmp_path / "project")
    before = by_slot(only_study(project))

    trainlab(["search"], project)   # same params: same study, budget already spent
    assert by_slot(only_study(project)) == before

    changed = search_params(search__sampler="random",
                            search__space={**TINY_SPACE, "model.dropout": {"type": "categorical",
                                                                            "choices": [0.1, 0.3]}})
    write_params(project, changed)
    trainlab(["search"], project)

    monkeypatch.chdir(project)   # study_name() hashes the prepared data of the working directory
    old_name, new_name = study_name(validate(params)), study_name(validate(changed))
    assert old_name != new_name
    assert old_name.startswith("trainlab-search-") and new_name.startswith("trainlab-search-")
    # One list of the settings that change no number (TrainerConfig.NOT_MATHS): resume checkpoints
    # and studies both read it. Threads are not on it: another count sums in another order.
    quiet = search_params(search__sampler="random", trainer__checkpoint_min_interval_s=0.5, trainer__progress="off",
                          search__workers=2)
    assert study_name(validate(quiet)) == old_name
    assert study_name(validate(search_params(search__sampler="random", trainer__threads=2))) != old_name
    found = studies(project)
    assert set(found) == {old_name, new_name}
    assert by_slot(found[old_name]) == before
    fresh = by_slot(found[new_name])
    assert sorted(fresh) == [0, 1, 2] and all(v["model.dropout"] in (0.1, 0.3) for v, _, _ in fresh.values())


# ------------------------------------------------------------------------------- pruning
def test_median_pruner_prunes_a_bad_trial(searched) -> None:
    # The stage's median pruner waits for 3 finished trials and 3 warm-up epochs, so the
    # grid runs three good learning rates, then a hopeless one checked at epoch 4.
    space = {LR: {"type": "categorical", "choices": [3.0e-2, 2.0e-2, 1.0e-2, 1.0e-7]}}
    params = search_params(search__sampler="grid", search__pruner="median", search__n_trials=4,
                           search__epochs=5, search__space=space)
    project = searched("pruned", params)
    slots = by_slot(only_study(project))
    assert {s: state for s, (_, _, state) in slots.items()} == {0: "COMPLETE", 1: "COMPLETE", 2: "COMPLETE",
                                                               3: "PRUNED"}
    assert slots[3][0] == {LR: 1.0e-7}
    trials = {int(t.user_attrs["slot"]): t for t in counted(only_study(project))}
    # Pruned at the first epoch the pruner may act on (epoch 4: steps count epochs from 1, as
    # MLflow's epoch axis does), against the median there.
    pruned = trials[3]
    assert max(pruned.intermediate_values) == 4
    median = sorted(trials[s].intermediate_values[4] for s in range(3))[1]
    assert pruned.intermediate_values[4] > median
    assert all(sorted(trials[s].intermediate_values) == [1, 2, 3, 4, 5] for s in range(3))
    found = metrics(project)
    assert found["trials/pruned"] == 1 and found["trials/complete"] == 3
    _, children = search_children(project)
    states = {r.data.tags["optuna.slot"]: r.data.tags["optuna.state"] for r in children}
    assert states == {"0": "COMPLETE", "1": "COMPLETE", "2": "COMPLETE", "3": "PRUNED"}
    # Visibly pruned in MLflow, which has no PRUNED status: named so and tagged, and FINISHED
    # (stopped on purpose), not KILLED or FAILED, whose red icon is a crash's.
    runs = {r.data.tags["optuna.slot"]: r for r in children}
    assert [runs[s].info.status for s in "0123"] == ["FINISHED"] * 4
    # Each trial names its MLflow run (user attribute mlflow_run_id).
    assert {s: trials[s].user_attrs["mlflow_run_id"] for s in range(4)} == {s: runs[str(s)].info.run_id
                                                                          for s in range(4)}
    assert runs["3"].info.run_name == "search trial 3 (lr=1e-07) [pruned]"
    assert runs["3"].data.tags["optuna.pruned"].startswith("pruned at epoch 4 (val/loss=")
    assert not any(r.info.run_name.endswith("[pruned]") for s, r in runs.items() if s != "3")


# --------------------------------------------------------------------------- divergence
def test_diverging_trial_fails_and_the_study_goes_on(searched) -> None:
    # AdamW at lr 1e8: its decoupled weight decay multiplies the weights by -1e4 per step.
    space = {LR: {"type": "categorical", "choices": [1.0e8, 3.0e-3]}, **{"model.dropout": TINY_SPACE["model.dropout"]}}
    params = search_params(search__sampler="grid", search__n_trials=3, search__space=space)
    project = searched("diverging", params)
    slots = by_slot(only_study(project))
    assert [slots[s][2] for s in range(3)] == ["FAIL", "FAIL", "COMPLETE"]
    assert [slots[s][0][LR] for s in range(3)] == [1.0e8, 1.0e8, 3.0e-3]
    found = metrics(project)
    assert found["trials/failed"] == 2 and found["trials/complete"] == 1
    assert search_children(project)[0].data.tags["optuna.best_slot"] == "2"
    _, children = search_children(project)
    assert {r.data.tags["optuna.slot"]: r.info.status for r in children} == {
        "0": "FAILED", "1": "FAILED", "2": "FINISHED"}
    assert all("diverged" in r.data.tags["trainlab.error"] for r in children if r.info.status == "FAILED")


# ------------------------------------------------------------------------- space checks
@pytest.mark.parametrize("key, spec, expected", [
    ("finetune.optimizer.lrr", {"type": "float", "low": 1.0e-3, "high": 1.0e-2},
     "search.space.finetune.optimizer.lrr: no such setting"),
    ("model.dropout", {"type": "float", "low": 0.0, "high": 1.5},
     "search.space.model.dropout: value 1.5 is invalid"),
], ids=["unknown-key", "out-of-range"])
def test_every_space_key_is_checked_before_the_first_trial(prepared_project: Path, tmp_path: Path,
                                                           key: str, spec: dict, expected: str) -> None:
    # The bad key comes last, so the check must look at every key, not just the first.
    params = search_params(search__space={**TINY_SPACE, key: spec})
    project = new_project(prepared_project, tmp_path / "project", params)
    result = trainlab(["search"], project, check=False)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {expected}"), result.stderr
    assert "trial" not in result.stdout + result.stderr
    assert not (project / ".trainlab/search").exists()


@pytest.mark.slow
def test_search_killed_mid_trial_resumes_to_the_same_result(searched, prepared_project: Path,
                                                            tmp_path: Path) -> None:
    # Long enough trials (no early stop) to be caught in the middle of trial 1.
    params = search_params(search__sampler="tpe", search__n_trials=3, search__epochs=20,
                           finetune__early_stopping__enabled=False)
    reference = by_slot(only_study(searched("kill-reference", params)))

    project = new_project(prepared_project, tmp_path / "project", params)
    log = (tmp_path / "search.log").open("w")
    proc = subprocess.Popen([str(BIN / "trainlab"), "search"], cwd=project, env=clean_env(), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "trial 0:" in (tmp_path / "search.log").read_text(), 600, "trial 0 to finish", proc)
        slot1_checkpoint = project / ".trainlab/resume/search-slot-001.pt"
        wait_for(slot1_checkpoint.is_file, 600, "trial 1's first epoch checkpoint", proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        log.close()
    assert proc.returncode == -signal.SIGKILL
    interrupted = only_study(project)
    running = [t for t in interrupted if t.state == TrialState.RUNNING]
    assert [int(t.user_attrs["slot"]) for t in running] == [1]
    assert by_slot(interrupted) == {0: reference[0]}

    result = trainlab(["search"], project)
    assert "resuming from .trainlab/resume/search-slot-001.pt" in result.stderr
    trials = only_study(project)
    assert by_slot(trials) == reference
    assert len(counted(trials)) == 3
    assert [(int(t.user_attrs["slot"]), t.state) for t in killed(trials)] == [(1, TrialState.FAIL)]
    assert metrics(project)["trials/killed_and_retried"] == 1
    # MLflow: the dead search run and its dead trial run are marked KILLED, none left RUNNING.
    runs = mlflow_runs(project)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    statuses = sorted((r.data.tags.get("optuna.slot", "search"), r.info.status) for r in runs
                      if r.data.tags.get("trainlab.stage") == "search")
    assert statuses == [("0", "FINISHED"), ("1", "FINISHED"), ("1", "KILLED"), ("2", "FINISHED"),
                        ("search", "FINISHED"), ("search", "KILLED")]


# ---------------------------------------------------------------------------- parallelism
@pytest.mark.slow
def test_two_workers_share_one_study(searched) -> None:
    params = search_params(search__sampler="random", search__n_trials=4, search__workers=2, search__top_k=2)
    project = searched("two-workers", params)
    trials = only_study(project)
    slots = by_slot(trials)
    assert sorted(slots) == [0, 1, 2, 3]
    assert len(counted(trials)) == len(trials) == 4
    # Trials ran in the spawned worker processes, not in the stage's own process.
    assert {t.user_attrs["pid"] for t in trials}.isdisjoint({int(parent_pid(project))})
    assert len({json.dumps(v, sort_keys=True) for v, _, _ in slots.values()}) == 4
    found = metrics(project)
    assert found["trials/complete"] == 4
    parent, children = search_children(project)
    assert sorted(r.data.tags["optuna.slot"] for r in children) == ["0", "1", "2", "3"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)


# ------------------------------------------------------------------------ grid vs random
def load_bench():
    spec = importlib.util.spec_from_file_location("grid_vs_random", ROOT / "bench" / "grid_vs_random.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_random_beats_grid() -> None:
    bench = load_bench()
    rows = bench.compare(repetitions=5, grid_points=2)
    grid_best = statistics.median(r[1] for r in rows)
    random_best = statistics.median(r[2] for r in rows)
    assert random_best < grid_best
    # The grid only ever tries its 2 learning rates (the range's ends), whatever the seed.
    params = bench.search_params("grid", 2, 0)
    lrs = {point[LR] for point in grid(params.search.space, 2)}
    assert lrs == {1.0e-4, 1.0e-1}


# ----------------------------------------------------------------- public Optuna API only
def test_search_touches_no_private_optuna_api() -> None:
    # Optuna has no upper bound in pyproject.toml, so search code may only use its public
    # API: no x._attr (but our own classes' self._attr), no optuna._private module.
    optuna_objects = [optuna.samplers.RandomSampler(seed=0), optuna.samplers.TPESampler(seed=0),
                      optuna.samplers.BaseSampler, optuna.create_study(), optuna.pruners.MedianPruner()]
    files = [*sorted((ROOT / "src/trainlab/search").glob("*.py")), ROOT / "stages/search.py"]
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{path.name}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                # our own classes' attributes, and os._exit (public, despite its name)
                own = isinstance(node.value, ast.Name) and (node.value.id == "self" or
                                                            (node.value.id, node.attr) == ("os", "_exit"))
                if not own or any(hasattr(obj, node.attr) for obj in optuna_objects):
                    found.append(f"{where}: .{node.attr}")
            modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            found += [f"{where}: import {m}" for m in modules
                      if m.startswith("optuna") and any(p.startswith("_") for p in m.split("."))]
    assert found == []


def test_a_lock_left_by_a_killed_search_can_be_freed(tmp_path: Path, monkeypatch) -> None:
    """Optuna frees a journal lock left behind after its grace period by stat()ing the lock
    symlink's target; with a relative journal path that target never resolves, and the next
    search waited forever (a SIGKILLed search in tests/test_search_workers.py hung there)."""
    from trainlab.search.study import storage_url

    monkeypatch.chdir(tmp_path)
    storage = storage_url(validate(search_params()))
    backend = storage._backend
    lock_file = backend._file_path + ".lock"
    os.symlink(backend._file_path, lock_file)   # what JournalFileSymlinkLock.acquire leaves if killed
    assert os.stat(lock_file).st_mtime > 0       # the target resolves: the grace period can apply
