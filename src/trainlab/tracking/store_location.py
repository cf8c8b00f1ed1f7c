"""Where the project's own MLflow store lives: in the repository, not the working directory.

`dvc exp run --queue` and `--temp` run the stages in a throwaway copy of the repository
(`.dvc/tmp/exps/tmpXXXX`) that DVC deletes afterwards, so a store found from the working
directory was created there and lost with it. DVC tells its stage processes where the
repository is: `DVC_ROOT` is the DVC root of the workspace for `dvc repro` and plain
`dvc exp run`, and the *parent* repository's root inside a queued or temporary
experiment (dvc/repo/experiments/queue/base.py sets it for exactly this purpose). So
every run of every experiment writes to one `mlflow.db` at the project root.

Resume checkpoints and the search study (`.trainlab/`) deliberately stay relative to the
working directory: a queued experiment gets its own copy, so two experiments run by
`dvc queue start -j 2` never resume from, or add trials to, each other's state.
"""

from __future__ import annotations

import os
from pathlib import Path

from trainlab import paths

DVC_ROOT_ENV = "DVC_ROOT"


def project_root(cwd: Path | None = None) -> Path:
    """The project folder of the repository this stage belongs to (see the module docstring)."""
    here = (cwd or Path.cwd()).resolve()
    parent_root = os.environ.get(DVC_ROOT_ENV)
    if not parent_root:
        return here
    local_root = _dvc_root_above(here)
    if local_root is None:      # not inside a DVC repository: DVC_ROOT leaked from elsewhere
        return here
    # The project may sit in a sub-folder of the DVC repository (a stage `wdir`): keep that offset.
    candidate = Path(parent_root).resolve() / here.relative_to(local_root)
    return candidate if candidate.is_dir() else here


def default_store_uri(cwd: Path | None = None) -> str:
    """The embedded sqlite store used when neither tracking.uri nor MLFLOW_TRACKING_URI is set."""
    return f"sqlite:///{project_root(cwd) / paths.MLFLOW_DB}"


def _dvc_root_above(path: Path) -> Path | None:
    for folder in (path, *path.parents):
        if (folder / ".dvc").is_dir():
            return folder
    return None
