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
