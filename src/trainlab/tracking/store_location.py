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


# Where a local sqlite store keeps absolute paths of the files next to it (MLflow 3.x schema).
PATH_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                ("logged_models", "artifact_location"), ("model_versions", "storage_location"),
                ("model_versions", "source"))


def relocate_moved_store(db: Path) -> str | None:
    """Point a moved or copied project's store at its own `mlruns/`; returns the line to print, or None.

    MLflow's sqlite store records absolute paths: every experiment's artifact location, and
    under it every run's and model's. A project folder that was renamed, moved or copied kept
    reading and writing run files and models in the original folder (or failed where it is
    gone). When the store's experiments keep their files in `<other folder>/mlruns` instead
    of the `mlruns/` beside it, those paths are rewritten to this folder's. Call it with the
    store's open lock held (store.sqlite_store_lock): two stages must not rewrite at once.
    """
    import sqlite3
    from contextlib import closing

    if not db.is_file() or db.stat().st_size == 0:
        return None
    here = db.resolve().parent / "mlruns"
    try:
        with closing(sqlite3.connect(db, timeout=30)) as con, con:   # committed, then closed
            locations = [row[0] for row in con.execute("SELECT artifact_location FROM experiments")]
            old_roots = sorted({str(root) for root in map(_mlruns_root, locations) if root and root != here})
            for old in old_roots:
                for table, column in PATH_COLUMNS:
                    for before, after in ((old, str(here)), (f"file://{old}", f"file://{here}")):
                        _replace_prefix(con, table, column, before, after)
    except sqlite3.DatabaseError:   # not (yet) an MLflow store, or damaged: opening it reports that
        return None
    if not old_roots:
        return None
    kept = "" if here.is_dir() else f" (copy {old_roots[0]} here to keep the files of the runs before)"
    return (f"tracking store {db} was made in {Path(old_roots[0]).parent}: its runs and models now read "
            f"and write their files in {here}{kept}")


def _mlruns_root(location: str | None) -> Path | None:
    """`<folder>/mlruns` of a local artifact location `<folder>/mlruns/<experiment id>`, else None."""
    if not location:
        return None
    path = location[len("file://"):] if location.startswith("file://") else location
    if not path.startswith("/"):
        return None
    parent = Path(path).parent
    return parent if parent.name == "mlruns" else None


def _replace_prefix(con, table: str, column: str, before: str, after: str) -> None:
    import sqlite3

    try:
        con.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                    f"WHERE {column} = ? OR substr({column}, 1, ?) = ?",
                    (after, len(before) + 1, before, len(before) + 1, before + "/"))
    except sqlite3.OperationalError:   # a table or column this MLflow version does not have
        pass
