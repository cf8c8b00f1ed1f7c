"""Stage runs through a real `mlflow server` (REST store, proxied artifacts), and a server that dies mid-run.

The module shares one server: the first test reads runs through it, the last one kills
it (tests in a module run in file order).
"""

from __future__ import annotations

import re
import subprocess
import threading
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from trainlab.config import flatten, load_params
from trainlab.engine.checkpoint import load_resume
from trainlab.models import load_model
from trainlab.testing import BIN, clean_env, copy_project, make_project, trainlab, write_params

from helpers.tracking import PER_EPOCH, PER_STEP, artifact_paths, download, label, steps_of
from helpers.tracking_server import Server, free_port, wait_healthy


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """`mlflow server` on a free port with a sqlite backend and a local artifact destination."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port, log = free_port(), root / "server.log"
    cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{root / 'srv.db'}", "--artifacts-destination", str(root / "art")]
    with open(log, "w") as out:
        # One worker and no job runner: the server's defaults start a dozen processes.
        process = subprocess.Popen(cmd, env=clean_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    running = Server(f"http://127.0.0.1:{port}", process)
    try:
        wait_healthy(running, log)
        yield running
    finally:
        running.kill()

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served_project(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project whose prepare and pretrain stages logged to the server."""
    project = make_project(tmp_path_factory.mktemp("served") / "project")
    trainlab(["prepare"], project, MLFLOW_TRACKING_URI=server.uri)
    trainlab(["pretrain"], project, MLFLOW_TRACKING_URI=server.uri)
    return project


def test_stage_runs_through_the_server(server: Server, served_project: Path, tmp_path: Path) -> None:
    client = MlflowClient(server.uri)
    experiment = client.get_experiment_by_name("trainlab")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = {label(r): r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["prepare", "pretrain"]
    assert all(r.info.status == "FINISHED" for r in runs.values())
    assert not (served_project / "mlflow.db").exists()   # nothing went to the local store

    resolved = load_params(served_project / "params.yaml")
    pretrain = runs["pretrain"]
    reads = ("seed", "model", "trainer", "pretrain")   # pretrain's params in dvc.yaml: all it logs
    assert pretrain.data.params == {key: str(value) for key, value in flatten(resolved).items()
                                    if key.split(".")[0] in reads}
    assert pretrain.data.tags["dvc.stage"] == "pretrain" and pretrain.data.tags["device"] == "cpu"

    run_id = pretrain.info.run_id
    steps = int(pretrain.data.metrics["final.steps"])
    for key in PER_STEP:
        assert steps_of(client, run_id, key) == list(range(steps)), key
    for key in PER_EPOCH:
        assert steps_of(client, run_id, key) == list(range(1, resolved.pretrain.epochs + 1)), key

    assert {"model/pretrained.pt", "plots/curves.png", "diagnosis.md", "config/params.yaml",
            "config/resolved_params.json", "environment/requirements.txt"} <= artifact_paths(client, run_id)
    logged, _ = load_model(download(client, run_id, "model/pretrained.pt", tmp_path))
    local, _ = load_model(served_project / "models/pretrained.pt")
    for (name, a), (_, b) in zip(logged.state_dict().items(), local.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert (download(client, run_id, "config/params.yaml", tmp_path).read_text()
            == (served_project / "params.yaml").read_text())


def test_server_dying_mid_run_fails_the_stage_cleanly(server: Server, served_project: Path,
                                                      tmp_path: Path) -> None:
    project = copy_project(served_project, tmp_path / "project")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["pretrain"]["epochs"] = 40
    params["pretrain"]["early_stopping"]["enabled"] = False
    write_params(project, params)

    stage = subprocess.Popen([str(BIN / "trainlab"), "pretrain"], cwd=project,
                             env=clean_env(MLFLOW_TRACKING_URI=server.uri),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(600, stage.kill)   # a hung stage must not hang the suite
    watchdog.start()
    try:
        seen = []
        for line in stage.stderr:
            seen.append(line)
            if re.search(r"\[pretrain\] epoch \d+/40", line):
                break
        assert seen and "epoch" in seen[-1], "".join(seen)
        server.kill()
        # The guard only stops a hang; the stage gives up after two quick retries.
        stdout, rest = stage.communicate(timeout=180)
    finally:
        watchdog.cancel()
        if stage.poll() is None:
            stage.kill()
            stage.wait()

    stderr = "".join(seen) + rest
    assert stage.returncode == 2, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and server.uri in errors[0] and "stopped answering" in errors[0], stderr
    assert stderr.strip().splitlines()[-1] == errors[0]
    # The last epoch checkpoint stays for the rerun that resumes.
    resume = load_resume(project / ".trainlab/resume/pretrain.pt")
    assert 1 <= resume["counters"]["epoch"] < 40
    # Nothing was published: the model is still the one the earlier, finished run wrote.
    assert (project / "models/pretrained.pt").read_bytes() == (served_project / "models/pretrained.pt").read_bytes()
