"""Search state never mixes experiments: the study is keyed by the prepared data, the
pretrained model, the code and the params; trial files live per study and are checked
when published; two searches in one folder publish one after the other; the study is
found by the name the stage prints. All through the real `trainlab search`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import re
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from trainlab.models import load_model
from trainlab.search.identity import code_hash
from trainlab.testing import BIN, clean_env, copy_project, trainlab, write_params

from helpers.search import by_slot, journal, mlflow_runs, new_project, search_params, studies, wait_for
from helpers.tracking import artifact_paths, client_of

STUDY_LINE = re.compile(r"^search: study (\S+) in \.trainlab/search/study\.journal$", re.MULTILINE)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def printed_study(stderr: str) -> str:
    found = STUDY_LINE.findall(stderr)
    assert len(found) == 1, stderr[-2000:]
    return found[0]


def assert_published_from(project: Path, name: str) -> list[dict]:
    """models/search and reports/search all come from study `name`, file for file."""
    members = json.loads((project / "models/search/members.json").read_text())
    assert members and {m["study"] for m in members} == {name}
    for member in members:
        path = project / "models/search" / member["file"]
        assert sha256(path) == member["sha256"]
        meta = load_model(path)[1]["meta"]
        assert (meta["study"], meta["slot"], meta["params"]) == (name, member["slot"], member["params"])
    best = (project / "reports/search/best_params.yaml").read_text()
    assert f"of study {name}:" in best.splitlines()[0]
    assert yaml.safe_load(best) == members[0]["params"]
    metrics = json.loads((project / "reports/search/details.json").read_text())
    assert metrics["best/val/loss"] == members[0]["value"]
    trials = studies(project)[name]
    assert members[0]["value"] == min(t.value for t in trials if t.state == TrialState.COMPLETE)
    return members


@pytest.fixture(scope="module")
def seed0(prepared_project: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A project after one search (random, 2 trials, search.seed 0) and that search's stderr and stdout."""
    params = search_params(search__sampler="random", search__n_trials=2, search__seed=0)
    project = new_project(prepared_project, tmp_path_factory.mktemp("seed0") / "project", params)
    done = trainlab(["search"], project)
    return project, done.stderr, done.stdout


def test_the_study_is_found_by_the_printed_name(seed0: tuple[Path, str, str]) -> None:
    project, stderr, stdout = seed0
    name = printed_study(stderr)
    study = optuna.load_study(study_name=name, storage=journal(project))
    assert sorted(int(t.user_attrs["slot"]) for t in study.trials) == [0, 1]
    search = [r for r in mlflow_runs(project) if r.data.tags.get("trainlab.stage") == "search"]
    assert {r.data.tags["optuna.study_name"] for r in search} == {name}   # the search run and its trials
    assert len(search) == 3
    # The stage ends with the exact call that opens the study: run as printed, it finds it.
    call = [line.split(": ", 1)[1] for line in stdout.splitlines() if line.startswith("[search] open the study: ")]
    assert call == [f"optuna.load_study(study_name={name!r}, storage=JournalStorage(JournalFileBackend("
                    f"'.trainlab/search/study.journal')))"]
    with contextlib.chdir(project):   # the path is relative to the project folder, as printed
        opened = eval(call[0], {"optuna": optuna, "JournalStorage": JournalStorage,
                                "JournalFileBackend": JournalFileBackend})
        assert opened.study_name == name and [t.number for t in opened.trials] == [t.number for t in study.trials]
    # Pruning's input, each trial's val/loss per epoch, is drawn beside the other study plots,
    # as a file and with the search run.
    plot = project / "reports/search/artifacts/intermediate_values.png"
    assert plot.read_bytes().startswith(b"\x89PNG")
    parent = next(r for r in search if "mlflow.parentRunId" not in r.data.tags)
    assert "study/intermediate_values.png" in artifact_paths(client_of(project), parent.info.run_id)
    assert_published_from(project, name)


def test_search_seed_0_then_1_then_0_publishes_matching_files(seed0: tuple[Path, str], tmp_path: Path) -> None:
    project = copy_project(seed0[0], tmp_path / "project")
    first = printed_study(seed0[1])
    members0 = assert_published_from(project, first)

    write_params(project, search_params(search__sampler="random", search__n_trials=2, search__seed=1))
    second = printed_study(trainlab(["search"], project).stderr)
    assert second != first
    members1 = assert_published_from(project, second)
    assert [m["sha256"] for m in members1] != [m["sha256"] for m in members0]

    write_params(project, search_params(search__sampler="random", search__n_trials=2, search__seed=0))
    again = trainlab(["search"], project).stderr
    assert printed_study(again) == first and "trial 0:" not in again   # resumed, nothing to run
    assert assert_published_from(project, first) == members0
    # Each study keeps its own trial files.
    assert sorted(p.name for p in (project / ".trainlab/search/studies").iterdir()) == sorted([first, second])


def test_a_file_the_trial_did_not_write_is_never_published(seed0: tuple[Path, str], tmp_path: Path) -> None:
    project = copy_project(seed0[0], tmp_path / "project")
    name = printed_study(seed0[1])
    before = {p.name: p.read_bytes() for p in (project / "models/search").iterdir()}
    trials = project / ".trainlab/search/studies" / name
    (trials / "slot-000.pt").write_bytes((trials / "slot-001.pt").read_bytes())   # a valid model, the wrong one
    result = trainlab(["search"], project, check=False)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1] == (f"error: .trainlab/search/studies/{name}/slot-000.pt: missing or not the model trial 0 "
                         f"of study {name} wrote (SHA-256 differs); remove .trainlab/search to run the search afresh")
    assert "Traceback" not in result.stderr
    assert {p.name: p.read_bytes() for p in (project / "models/search").iterdir()} == before   # untouched


def test_a_new_pretrained_model_starts_a_new_study(seed0: tuple[Path, str], tmp_path: Path) -> None:
    project = copy_project(seed0[0], tmp_path / "project")
    first = printed_study(seed0[1])
    old_top1 = sha256(project / "models/search/top1.pt")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["pretrain"]["epochs"] += 1   # pretrain only: the search's own params are unchanged
    write_params(project, params)
    trainlab(["pretrain"], project)

    result = trainlab(["search"], project)
    second = printed_study(result.stderr)
    assert second != first and "trial 0:" in result.stderr and "trial 1:" in result.stderr
    found = studies(project)
    assert set(found) == {first, second}
    assert sorted(by_slot(found[second])) == [0, 1]
    assert_published_from(project, second)
    assert sha256(project / "models/search/top1.pt") != old_top1


def test_without_a_pretrained_model_the_search_stops_in_one_line(prepared_project: Path, tmp_path: Path) -> None:
    project = new_project(prepared_project, tmp_path / "project", search_params())
    (project / "models/pretrained.pt").unlink()
    result = trainlab(["search"], project, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: models/pretrained.pt: not found; run the stage that writes it first (dvc repro pretrain)"]


def test_the_code_hash_covers_every_source_file_but_caches(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub" / "__pycache__").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (package / "sub" / "b.py").write_text("y = 2\n")
    base = code_hash(package)
    (package / "sub" / "__pycache__" / "b.cpython-311.py").write_text("junk")
    assert code_hash(package) == base
    (package / "sub" / "b.py").write_text("y = 3\n")
    assert code_hash(package) != base
    (package / "sub" / "b.py").write_text("y = 2\n")
    (package / "sub" / "b.py").rename(package / "b.py")   # same content, another module
    assert code_hash(package) != base


@pytest.mark.slow
def test_two_searches_in_one_folder_publish_one_whole_study_each(prepared_project: Path, tmp_path: Path) -> None:
    # Two `trainlab search` with different params in one folder, at the same time. The
    # test holds the folder's publish lock until both have finished their trials: both
    # must wait for it, then publish one after the other, each all of its own study.
    project = copy_project(prepared_project, tmp_path / "project")
    for seed in (0, 1):
        write_params(project, search_params(search__sampler="random", search__n_trials=2, search__seed=seed))
        (project / "params.yaml").rename(project / f"params-{seed}.yaml")
    lock = project / ".trainlab/search/publish.lock"
    lock.parent.mkdir(parents=True)
    logs = [tmp_path / f"search-{seed}.log" for seed in (0, 1)]
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        procs = [subprocess.Popen([str(BIN / "trainlab"), "search", "--params", f"params-{seed}.yaml"],
                                  cwd=project, env=clean_env(), stdout=log.open("w"), stderr=subprocess.STDOUT)
                 for seed, log in zip((0, 1), logs)]
        try:
            def both_done() -> bool:
                names = [STUDY_LINE.findall(log.read_text()) for log in logs]
                if not all(names) or not (project / ".trainlab/search/study.journal").is_file():
                    return False
                found = studies(project)
                return all(len([t for t in found.get(n[0], []) if t.state == TrialState.COMPLETE]) == 2
                           for n in names)
            wait_for(both_done, 900, "both searches to finish their trials")
            time.sleep(3)
            assert [p.poll() for p in procs] == [None, None], "a search published without the lock"
            assert not (project / "models/search").exists() and not (project / "reports/search").exists()
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
        codes = [p.wait(timeout=300) for p in procs]
    outputs = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n---\n".join(o[-3000:] for o in outputs)
    names = [printed_study(o) for o in outputs]
    assert names[0] != names[1]
    members = json.loads((project / "models/search/members.json").read_text())
    assert members[0]["study"] in names
    assert_published_from(project, members[0]["study"])
