"""MLflow tracking of stage runs, read back from the real sqlite store with MlflowClient.

References are independent of the tracking code where one exists: the project's git
HEAD, sha256 of the prepared files, the DVC metrics and plots files the stage wrote,
the model file on disk, the installed versions.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from trainlab.config import flatten, load_params, params_hash
from trainlab.diagnose import FINDING_NAMES
from trainlab.models import load_model
from trainlab.testing import BIN, ROOT, copy_project, run, trainlab as trainlab_cli
import trainlab

from helpers.tracking import (PER_EPOCH, PER_STEP, artifact_paths, client_of, download, experiment_id, label,
                              only_run, stage_runs, steps_of)


def history(client: MlflowClient, run_id: str, key: str) -> list[float]:
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def git_head(project: Path) -> str:
    return run(["git", "rev-parse", "HEAD"], project).stdout.strip()


# ---------------------------------------------------------------------------------------------
# what a stage run records
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", ["prepare", "pretrain"])
def test_stage_run_lineage_tags(prepared_project: Path, stage: str) -> None:
    """One FINISHED run named after the stage and its pipeline run (no DVC experiment here), tagged
    with where it came from."""
    found = only_run(prepared_project, stage)
    tags = found.data.tags
    assert found.info.run_name == f"{stage} · {tags['trainlab.pipeline_run']}" and found.info.status == "FINISHED"
    assert tags["trainlab.run_label"] == stage
    assert tags["git.commit"] == git_head(prepared_project)
    assert tags["git.dirty"] == "false"   # outputs are untracked; tracked files match the commit
    assert tags["dvc.stage"] == tags["trainlab.stage"] == stage
    assert re.fullmatch(r"[0-9a-f]{12}", tags["trainlab.pipeline_run"])
    assert tags["trainlab.params_hash"] == params_hash(load_params(prepared_project / "params.yaml"))
    assert tags["torch.version"] == torch.__version__
    assert tags["trainlab.version"] == trainlab.__version__
    assert "trainlab.rerun_of" not in tags
    # What decides the last bits of every result (docs/reproducibility.md, "Results on another CPU").
    assert tags["cpu.model"] and tags["cpu.model"] != "unknown"
    assert tags["cpu.isa"] in ("amx", "avx512", "avx2", "sse4.2")
    if stage == "pretrain":   # prepare never imports torch, so it cannot say which kernels run
        assert tags["torch.cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    else:
        assert "torch.cpu_capability" not in tags


def test_pretrain_run_tags_inputs_device_and_diagnosis(prepared_project: Path) -> None:
    tags = only_run(prepared_project, "pretrain").data.tags
    prepared = prepared_project / "data" / "prepared"
    expected = {f"input.{f.parent.name}/{f.stem.replace('_', '/')}.sha256": hashlib.sha256(f.read_bytes()).hexdigest()
                for f in prepared.glob("*/*.npy")}
    assert len(expected) == 10   # target train/val/test and source train/val, x and y each
    assert {k: v for k, v in tags.items() if k.startswith("input.")} == expected
    assert tags["device"] == "cpu" and tags["precision"] == "fp32"
    names = tags["trainlab.diagnosis"].split(",")
    assert names and set(names) <= set(FINDING_NAMES)
    diagnosis_md = (prepared_project / "reports/pretrain/artifacts/diagnosis.md").read_text()
    assert all(name in diagnosis_md for name in names)


def test_experiment_uses_the_model_training_view(prepared_project: Path) -> None:
    experiment = client_of(prepared_project).get_experiment_by_name("trainlab")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


# The sections each stage's dvc.yaml entry declares as params: what its run logs, no more.
READS = {"prepare": ("seed", "data"), "pretrain": ("seed", "model", "trainer", "pretrain")}


@pytest.mark.parametrize("stage", ["prepare", "pretrain"])
def test_params_are_the_resolved_config_flattened(prepared_project: Path, stage: str) -> None:
    logged = only_run(prepared_project, stage).data.params
    resolved = flatten(load_params(prepared_project / "params.yaml"))
    reads = {key: str(value) for key, value in resolved.items()
             if any(key == s or key.startswith(f"{s}.") for s in READS[stage])}
    assert logged == reads and logged["seed"] == "0"
    if stage == "pretrain":
        written = yaml.safe_load((prepared_project / "params.yaml").read_text())
        assert logged["pretrain.optimizer.eps"] == str(written["pretrain"]["optimizer"]["eps"]) == "1e-08"
        assert logged["model.width"] == "8" and logged["trainer.threads"] == "1"
        assert logged["pretrain.optimizer.betas"] == "[0.9, 0.999]"
        assert not [key for key in logged if key.startswith(("finetune.", "search.", "data.", "tracking."))]
    else:   # not the ~130 params of every section: only seed and data
        assert logged["data.train_samples"] == "200" and len(logged) < len(resolved) / 3


@pytest.mark.slow
def test_defaults_left_out_of_the_params_file_are_logged(prepared_project: Path, tmp_path: Path) -> None:
    project = copy_project(prepared_project, tmp_path / "project")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["val_fraction"] = 0.2
    for key in ("split_seed", "digits", "file"):   # left to the schema
        del params["data"][key]
    partial = tmp_path / "partial.yaml"
    partial.write_text(yaml.safe_dump(params, sort_keys=False))
    trainlab_cli(["prepare", "--params", str(partial)], project)

    new = stage_runs(client_of(project), "prepare")[0]
    logged = new.data.params
    assert logged["data.val_fraction"] == "0.2"
    # The schema's documented defaults (params.yaml comments), not in the file, are in the run.
    assert logged["data.split_seed"] == "1"
    assert logged["data.digits.source_classes"] == "[0, 1, 2, 3, 4]"
    assert logged["data.file.label"] == "label"
    assert logged["data.file.path"] == "data/own"          # the placeholder: no file of the user's
    # The file as given is kept next to the resolved config.
    client = client_of(project)
    assert (download(client, new.info.run_id, "config/partial.yaml", tmp_path / "dl").read_text()
            == partial.read_text())


def test_pretrain_metrics_have_explicit_steps(prepared_project: Path) -> None:
    """Per-step metrics on every optimizer step, per-epoch metrics on every epoch, matching DVC's files."""
    client = client_of(prepared_project)
    run_id = only_run(prepared_project, "pretrain").info.run_id
    params = load_params(prepared_project / "params.yaml")
    samples = len(np.load(prepared_project / "data/prepared/source/train_y.npy"))
    steps_per_epoch = math.ceil(samples / params.trainer.batch_size)
    epochs = params.pretrain.epochs
    for key in PER_STEP:
        assert steps_of(client, run_id, key) == list(range(epochs * steps_per_epoch)), key
    for key in PER_EPOCH:
        assert steps_of(client, run_id, key) == list(range(1, epochs + 1)), key
    curves = json.loads((prepared_project / "reports/pretrain/curves.json").read_text())
    assert history(client, run_id, "val/loss") == [row["val_loss"] for row in curves]
    assert [row["epoch"] for row in curves] == list(range(1, epochs + 1))   # DVC's axis is MLflow's
    assert history(client, run_id, "train/loss") == [row["train_loss"] for row in curves]
    assert history(client, run_id, "val/acc") == [row["val_acc"] for row in curves]
    dvc_metrics = json.loads((prepared_project / "reports/pretrain/details.json").read_text())
    latest = client.get_run(run_id).data.metrics
    assert latest["final.val.acc"] == dvc_metrics["val/acc"]
    assert latest["final.steps"] == dvc_metrics["steps"] == epochs * steps_per_epoch
    assert latest["final.best_epoch"] in steps_of(client, run_id, "val/loss")


def test_pretrain_artifacts(prepared_project: Path, tmp_path: Path) -> None:
    client = client_of(prepared_project)
    run_id = only_run(prepared_project, "pretrain").info.run_id
    assert {"model/pretrained.pt", "plots/curves.png", "diagnosis.md", "config/params.yaml",
            "config/resolved_params.json", "environment/requirements.txt"} <= artifact_paths(client, run_id)

    logged_file = download(client, run_id, "model/pretrained.pt", tmp_path)
    # The run's artifact is the DVC output byte for byte (no run id inside: a rerun gives the same bytes).
    assert logged_file.read_bytes() == (prepared_project / "models/pretrained.pt").read_bytes()
    model, meta = load_model(logged_file)
    local, _ = load_model(prepared_project / "models/pretrained.pt")
    assert meta["meta"] == {"stage": "pretrain"}
    for (name, logged), (_, on_disk) in zip(model.state_dict().items(), local.state_dict().items(), strict=True):
        assert torch.equal(logged, on_disk), name

    assert download(client, run_id, "plots/curves.png", tmp_path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (download(client, run_id, "diagnosis.md", tmp_path).read_text()
            == (prepared_project / "reports/pretrain/artifacts/diagnosis.md").read_text())
    assert (download(client, run_id, "config/params.yaml", tmp_path).read_text()
            == (prepared_project / "params.yaml").read_text())
    resolved = json.loads(download(client, run_id, "config/resolved_params.json", tmp_path).read_text())
    assert resolved == load_params(prepared_project / "params.yaml").model_dump(mode="json")
    requirements = download(client, run_id, "environment/requirements.txt", tmp_path).read_text().splitlines()
    assert f"torch=={torch.__version__}" in requirements
    assert any(line.startswith("mlflow==") for line in requirements)


def test_prepare_artifacts(prepared_project: Path, tmp_path: Path) -> None:
    client = client_of(prepared_project)
    run_id = only_run(prepared_project, "prepare").info.run_id
    assert {"manifest.json", "config/params.yaml", "config/resolved_params.json",
            "environment/requirements.txt"} <= artifact_paths(client, run_id)
    assert (json.loads(download(client, run_id, "manifest.json", tmp_path).read_text())
            == json.loads((prepared_project / "data/prepared/manifest.json").read_text()))


# ---------------------------------------------------------------------------------------------
# pipeline invocations, failures, dead processes, unreachable servers
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_one_dvc_repro_shares_a_pipeline_run_tag(prepared_project: Path, tmp_path: Path) -> None:
    project = copy_project(prepared_project, tmp_path / "project")
    before = {r.info.run_id for r in client_of(project).search_runs([experiment_id(client_of(project))])}
    run([str(BIN / "dvc"), "repro", "-f", "prepare", "pretrain"], project)
    client = client_of(project)
    new = [r for r in client.search_runs([experiment_id(client)]) if r.info.run_id not in before]
    assert sorted(label(r) for r in new) == ["prepare", "pretrain"]
    assert all(r.info.status == "FINISHED" for r in new)
    shared = {r.data.tags["trainlab.pipeline_run"] for r in new}
    assert len(shared) == 1
    # The original runs were separate `trainlab` invocations: each had its own id.
    original = {r.data.tags["trainlab.pipeline_run"] for r in client.search_runs([experiment_id(client)])
                if r.info.run_id in before}
    assert len(original) == 2 and not shared & original
    # The run table tells the two invocations apart: each name ends in its pipeline run id.
    pipeline = next(iter(shared))
    assert {r.info.run_name for r in new} == {f"{stage} · {pipeline}" for stage in ("prepare", "pretrain")}


def test_failing_stage_leaves_a_failed_run(prepared_project: Path, tmp_path: Path) -> None:
    project = copy_project(prepared_project, tmp_path / "project")
    (project / "data/prepared/source/train_x.npy").unlink()
    result = trainlab_cli(["pretrain"], project, check=False)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: data/prepared/source/train_x.npy")
    failed = stage_runs(client_of(project), "pretrain")[0]
    assert failed.info.status == "FAILED"
    assert failed.data.tags["trainlab.error"].startswith("DataError: data/prepared/source/train_x.npy")


@pytest.mark.slow
def test_running_run_of_a_dead_process_becomes_killed(prepared_project: Path, tmp_path: Path) -> None:
    project = copy_project(prepared_project, tmp_path / "project")
    client = client_of(project)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    dead_pid = int(finished.stdout)   # the process has exited: its pid is free
    host = socket.gethostname()
    dead = client.create_run(experiment_id(client), run_name="crashed",
                             tags={"trainlab.pid": str(dead_pid), "trainlab.host": host}).info.run_id
    alive = client.create_run(experiment_id(client), run_name="still-running",
                              tags={"trainlab.pid": str(os.getpid()), "trainlab.host": host}).info.run_id
    elsewhere = client.create_run(experiment_id(client), run_name="other-host",
                                  tags={"trainlab.pid": str(dead_pid), "trainlab.host": f"{host}-elsewhere"}).info.run_id

    trainlab_cli(["prepare"], project)   # any stage start sweeps the experiment

    assert client.get_run(dead).info.status == "KILLED"
    assert client.get_run(dead).data.tags["trainlab.error"] == "process died without closing the run"
    assert client.get_run(alive).info.status == "RUNNING"        # this test process is alive
    assert client.get_run(elsewhere).info.status == "RUNNING"    # pids of other hosts are not ours to judge


def test_unreachable_tracking_server_fails_before_training(prepared_project: Path, tmp_path: Path) -> None:
    project = copy_project(prepared_project, tmp_path / "project")
    shutil.rmtree(project / "models")
    runs_before = len(client_of(project).search_runs([experiment_id(client_of(project))]))
    uri = f"http://127.0.0.1:{closed_port()}"
    # The timeout only guards against a hang; the stage gives up on its own in seconds.
    result = run([str(BIN / "trainlab"), "pretrain"], project, check=False, timeout=120, MLFLOW_TRACKING_URI=uri)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and uri in lines[0], result.stderr
    assert not (project / "models").exists()
    assert not (project / ".trainlab/resume/pretrain.pt").exists()
    # It did not fall back to the local store either.
    assert len(client_of(project).search_runs([experiment_id(client_of(project))])) == runs_before


# ------------------------------------------------------------- git.dirty under dvc repro (issue 18)
def test_git_dirty_ignores_what_dvc_itself_rewrites(project: Path) -> None:
    """DVC deletes a stage's git-tracked metrics before running it: that is not a user's change."""
    (project / "notes.txt").write_text("tracked, not written by any stage\n")
    run([str(BIN / "dvc"), "repro", "prepare"], project)
    run(["git", "add", "dvc.lock", "reports/prepare/metrics.json", "notes.txt"], project)
    run(["git", "commit", "-q", "-m", "prepare outputs"], project)

    run([str(BIN / "dvc"), "repro", "--force", "prepare"], project)
    rerun = stage_runs(client_of(project), "prepare")[0]
    assert rerun.data.tags["git.dirty"] == "false"

    (project / "notes.txt").write_text("edited\n")
    run([str(BIN / "dvc"), "repro", "--force", "prepare"], project)
    assert stage_runs(client_of(project), "prepare")[0].data.tags["git.dirty"] == "true"


def test_dvc_written_paths_follow_dvc_yaml() -> None:
    from trainlab.tracking.lineage import changed_files, dvc_written_paths

    written = dvc_written_paths(ROOT, "sub/")
    assert {"sub/dvc.lock", "sub/data/prepared", "sub/models/pretrained.pt", "sub/reports/prepare/metrics.json",
            "sub/reports/pretrain/curves.json", "sub/reports/pretrain/artifacts"} <= set(written)
    assert "sub/params.yaml" not in written and not any(p.startswith("sub/src") for p in written)
    assert changed_files(" M a.txt\0R  new.txt\0old.txt\0 D reports/x.json\0") == [
        "a.txt", "new.txt", "old.txt", "reports/x.json"]


def test_null_run_stands_in_for_every_logging_call_but_not_for_a_typo() -> None:
    from trainlab.tracking import NullRun, StageRun
    from trainlab.training.tracking_hook import tracking_hooks

    run = NullRun()
    run.log_metrics({"val/loss": 1.0}, step=0)
    run.record_training({"val/acc": 1.0}, 1, {"trainlab.diagnosis": "healthy"}, [])
    assert run.backfill({"train/loss": [(0, 1.0)]}) == 0 and tracking_hooks(run) == []
    with pytest.raises(AttributeError):
        run.log_metirc({"val/loss": 1.0}, step=0)
    # Only model registration is missing: evaluate registers, and never runs as a DDP replica.
    public = {name for name in vars(StageRun) if not name.startswith("_")}
    assert public - set(dir(NullRun)) == {"register_model"}
