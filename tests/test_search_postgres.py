"""Two `trainlab search` processes share one Optuna study in a real PostgreSQL server.

The server comes from Debian's `postgresql` package (initdb/pg_ctl under
/usr/lib/postgresql/*/bin), runs on 127.0.0.1 on a free port with its socket in a
temporary directory, and is stopped in a finally. PostgreSQL refuses to run as root,
so as root the server runs as the `postgres` user.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import optuna
import pytest
from optuna.trial import TrialState

from trainlab.testing import BIN, clean_env, copy_project, small_params, write_params

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if not found:
        pytest.fail("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin; "
                    "install them with `apt-get install -y postgresql`")
    return found[-1].parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def as_server_user(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a server command, as the `postgres` user when we are root."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    result = subprocess.run(prefix + cmd, capture_output=True, text=True, timeout=120, **kwargs)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server and database; the URL trainlab's search.storage takes."""
    bindir = postgres_bin()
    # Not under pytest's tmp_path: its parents are private to root, the server user must reach it.
    root = Path(tempfile.mkdtemp(prefix="trainlab-pg-"))
    data = root / "data"
    port = free_port()
    started = False
    try:
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        as_server_user([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                        "-E", "UTF8", "--no-sync"])
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=50"
        as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "server.log"),
                        "-w", "-t", "60", "start"])
        started = True
        as_server_user([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "trainlab"])
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/trainlab"
    finally:
        if started:
            as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(root, ignore_errors=True)


def test_two_processes_share_a_postgres_study(postgres_url: str, prepared_project: Path, tmp_path: Path) -> None:
    n_trials = 4
    params = small_params(search__storage=postgres_url, search__sampler="random", search__n_trials=n_trials,
                          search__epochs=3, search__top_k=2,
                          search__space={"finetune.optimizer.lr": {"type": "float", "low": 1.0e-3,
                                                                   "high": 1.0e-2, "log": True}})
    project = copy_project(prepared_project, tmp_path / "project")
    write_params(project, params)

    logs = [(tmp_path / f"worker{i}.log").open("w") for i in range(2)]
    procs = [subprocess.Popen([str(BIN / "trainlab"), "search"], cwd=project, env=clean_env(), stdout=log,
                              stderr=subprocess.STDOUT) for log in logs]
    try:
        codes = [proc.wait(timeout=900) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=60)
        for log in logs:
            log.close()
    outputs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], "\n---\n".join(o[-3000:] for o in outputs)

    storage = optuna.storages.RDBStorage(postgres_url)
    try:
        names = optuna.get_all_study_names(storage)
        assert len(names) == 1
        trials = optuna.load_study(study_name=names[0], storage=storage).get_trials(deepcopy=False)
    finally:
        storage.remove_session()
        storage.engine.dispose()
    # Two processes may ask for a trial at once when one slot is left: the loser's trial is
    # marked surplus and told FAIL before it suggests anything, and it never counts.
    surplus = [t for t in trials if t.user_attrs.get("surplus")]
    assert all(t.state == TrialState.FAIL and t.params == {} and int(t.user_attrs["slot"]) >= n_trials
               for t in surplus), [(t.state, t.params, t.user_attrs) for t in surplus]
    assert len(surplus) <= 1, "each process stops after one surplus ask"
    trials = [t for t in trials if not t.user_attrs.get("surplus")]
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]
    assert len(trials) == n_trials, "every trial counted once, none beyond the budget"
    slots = sorted(int(t.user_attrs["slot"]) for t in trials)
    assert slots == list(range(n_trials))
    assert len({t.params["finetune.optimizer.lr"] for t in trials}) == n_trials
    assert {t.user_attrs["pid"] for t in trials} <= {proc.pid for proc in procs}
    metrics = json.loads((project / "reports/search/details.json").read_text())
    assert metrics["trials/complete"] == n_trials
