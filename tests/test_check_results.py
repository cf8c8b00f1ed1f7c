"""`trainlab check-results`: a rerun's final test scores against committed ones (issue 28, item 8).

A real project: `trainlab prepare` makes the test split (its size sets the tolerance), the
metrics file is committed with git, then rewritten as another CPU's run would leave it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trainlab.results_check import accuracy_tolerance, committed_scores, compare, score_of, tolerance
from trainlab.testing import make_project, run, small_params, trainlab

METRICS = Path("reports/evaluate/details.json")
COMMITTED = {"champion/acc": 0.90, "champion/ece": 0.02, "test/acc/ensemble": 0.90, "test/acc/scratch": 0.80,
             "test/loss/ensemble": 0.31, "heldout/loss/ensemble": 0.25}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = make_project(tmp_path_factory.mktemp("check") / "p", small_params())
    trainlab(["prepare"], project)
    write(project, COMMITTED)
    run(["git", "add", "-f", str(METRICS)], project)
    run(["git", "commit", "-qm", "results"], project)
    return project


def write(project: Path, metrics: dict) -> None:
    (project / METRICS).parent.mkdir(parents=True, exist_ok=True)
    (project / METRICS).write_text(json.dumps(metrics))


def test_the_tolerance_is_three_samples_or_half_a_point() -> None:
    assert accuracy_tolerance(100) == pytest.approx(0.03)
    assert accuracy_tolerance(1000) == pytest.approx(0.005)     # 3 samples = 0.3 point < 0.5
    assert tolerance("test/r2/ensemble", 50) == 0.02
    assert [score_of(k) for k in ("champion/acc", "test/acc/linear", "test/r2/x", "test/loss/x", "champion/ece",
                                  "heldout/loss/x", "test/acc_ci_low/x")] == ["acc", "acc", "r2", None, None, None, None]


def test_compare_flags_a_moved_score_and_a_missing_model() -> None:
    gaps = {g.key: g for g in compare({"test/acc/a": 0.95, "test/acc/b": 0.80}, {"test/acc/a": 0.90, "test/acc/c": 0.7},
                                      test_samples=100)}
    assert set(gaps) == {"test/acc/a", "test/acc/b", "test/acc/c"}
    assert not gaps["test/acc/a"].ok                 # 5 samples of 100 apart, 3 allowed
    assert not gaps["test/acc/b"].ok and not gaps["test/acc/c"].ok   # only on one side
    assert compare({"test/acc/a": 0.92}, {"test/acc/a": 0.90}, 100)[0].ok


def test_scores_within_the_tolerance_agree(project: Path) -> None:
    n = len(np.load(project / "data/prepared/target/test_y.npy"))
    step = accuracy_tolerance(n) * 0.9           # just inside, in the direction another CPU might go
    fresh = {**COMMITTED, "champion/acc": 0.90 - step, "test/acc/ensemble": 0.90 - step,
             "test/acc/scratch": 0.80 + step, "test/loss/ensemble": 0.5}   # losses are not compared
    write(project, fresh)
    done = trainlab(["check-results"], project)
    assert "results agree with HEAD" in done.stdout
    assert f"({n} test samples)" in done.stdout and "test/acc/scratch" in done.stdout
    assert "test/loss" not in done.stdout


def test_a_score_outside_the_tolerance_fails_naming_it(project: Path) -> None:
    n = len(np.load(project / "data/prepared/target/test_y.npy"))
    write(project, {**COMMITTED, "test/acc/scratch": 0.80 - accuracy_tolerance(n) - 1 / n})
    done = trainlab(["check-results"], project, check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == "results differ from HEAD by more than another CPU explains: test/acc/scratch"
    assert "OUTSIDE" in done.stdout and "Traceback" not in done.stderr


@pytest.mark.parametrize("revision, expected", [
    ("no-such-tag", "error: --against no-such-tag: no committed reports/evaluate/details.json to compare with"),
    ("HEAD~1", "error: --against HEAD~1: no committed reports/evaluate/details.json to compare with"),
])
def test_a_revision_without_the_file_is_one_line(project: Path, revision: str, expected: str) -> None:
    write(project, COMMITTED)
    done = trainlab(["check-results", "--against", revision], project, check=False)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith(expected)


def test_a_commit_from_before_details_json_is_read_from_its_metrics_json(tmp_path: Path, monkeypatch) -> None:
    """Until evaluate wrote details.json, its metrics.json held every score under the same keys."""
    legacy = tmp_path / "reports/evaluate/metrics.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(json.dumps(COMMITTED))
    run(["git", "init", "-q"], tmp_path)
    run(["git", "add", "-A"], tmp_path)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "old layout"], tmp_path)
    monkeypatch.chdir(tmp_path)
    assert committed_scores("HEAD") == COMMITTED
