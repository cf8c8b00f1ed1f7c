"""Shared fixtures: throwaway projects made with `trainlab.testing` (the helpers tests
and benchmarks share: the real params.yaml shrunk to a tiny CPU run)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from trainlab.testing import make_project, trainlab

# A suite started in the background by a shell without job control (`cmd &` in a script)
# inherits SIGINT ignored, and so would every stage the tests start: the Ctrl-C tests
# would then see runs that cannot be interrupted. The tests need the terminal's default.
signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh tiny project (not yet reproduced)."""
    return make_project(tmp_path / "project")


@pytest.fixture(scope="session")
def prepared_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project whose prepare and pretrain stages have run (shared, treat as read-only)."""
    path = make_project(tmp_path_factory.mktemp("prepared") / "project")
    trainlab(["prepare"], path)
    trainlab(["pretrain"], path)
    return path


@pytest.fixture(scope="session")
def ensembled_project(prepared_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The prepared project taken through finetune, a 2-trial search and ensemble: every model
    file and the records of their SHA-256 exist (shared, treat as read-only; copy it to change it)."""
    from trainlab.testing import copy_project, small_params, write_params

    path = copy_project(prepared_project, tmp_path_factory.mktemp("ensembled") / "project")
    space = {"finetune.optimizer.lr": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True}}
    write_params(path, small_params(search__sampler="random", search__space=space))
    for stage in ("finetune", "search", "ensemble"):
        trainlab([stage], path)
    return path
