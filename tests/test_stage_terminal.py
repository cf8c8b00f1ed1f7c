"""What a stage says at its edges: what it starts (before its slow imports), the live loss in
its progress bar, and at the end its MLflow run (id and link) and the files it wrote."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from trainlab.engine import Hook, LoopState, fit
from trainlab.testing import BIN, clean_env, trainlab
from trainlab.tracking.links import run_link

from helpers.engine import signal_data, tiny_model, train_spec, trainer_cfg
from helpers.tracking import client_of, experiment_id, only_run

HEAVY = ("numpy", "pydantic", "mlflow", "torch", "optuna")


def test_prepare_says_what_it_starts_before_any_heavy_import(project: Path) -> None:
    # -X importtime reports each import on stderr as it happens, and the stage's lines are
    # flushed as printed: in one pipe, the order is exact.
    result = subprocess.run([str(BIN / "python"), "-X", "importtime", "-m", "trainlab", "prepare"], cwd=project,
                            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=900, check=True)
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("[prepare] starting: "))
    assert lines[start] == "[prepare] starting: Build the target/source splits and manifest in data/prepared."
    heavy = [i for i, line in enumerate(lines) if re.search(rf"\| +({'|'.join(HEAVY)})$", line)]
    assert heavy and start < min(heavy), lines[min(heavy)]


def test_the_start_line_is_said_once_under_several_processes(capsys, monkeypatch) -> None:
    from trainlab.cli import load_stages_package
    from trainlab.engine.runtime import STORE_ENV

    load_stages_package()   # stages/ is a project folder, loaded as trainlab_stages
    from trainlab_stages.report import started

    started("pretrain")
    monkeypatch.setenv("RANK", "1")   # torchrun's other ranks
    started("pretrain")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv(STORE_ENV, "/tmp/store")   # rank 0 of the processes trainer.devices relaunches
    started("pretrain")
    assert capsys.readouterr().out.splitlines() == [
        "[pretrain] starting: Train on the source task, or import pretrain.from."]


def test_a_stage_ends_with_its_mlflow_run_and_the_files_it_wrote(project: Path) -> None:
    said = trainlab(["prepare"], project).stdout.splitlines()
    store = f"sqlite:///{project / 'mlflow.db'}"
    prepared = only_run(project, "prepare")
    exp, run_id = experiment_id(client_of(project)), prepared.info.run_id
    assert said[-2:] == [
        f"[prepare] MLflow run {run_id}: `mlflow ui --backend-store-uri {store} --host 127.0.0.1 --port 5000` then "
        f"http://127.0.0.1:5000/#/experiments/{exp}/runs/{run_id}?workflowType=machine_learning",
        "[prepare] wrote: data/prepared/, reports/prepare/"]


def test_a_tracking_server_run_links_to_its_page() -> None:
    assert (run_link("http://mlflow.example:8080/", "7", "abc123")
            == "http://mlflow.example:8080/#/experiments/7/runs/abc123?workflowType=machine_learning")


class Slow(Hook):
    """Each step takes longer than tqdm's 0.1 s refresh interval, so every step redraws the bar."""

    def on_step_end(self, state: LoopState) -> None:
        time.sleep(0.15)


def test_the_progress_bar_shows_the_live_loss(capsys) -> None:
    recorded = []

    class Losses(Hook):
        def on_metrics(self, state: LoopState, rows) -> None:
            recorded.extend(value for name, value, _ in rows if name == "train/loss")

    fit(tiny_model(), signal_data(64, 0), signal_data(32, 1), train_spec(2), trainer_cfg(
        batch_size=16, progress="bar", log_every_steps=1), seed=0, hooks=[Slow(), Losses()], label="pretrain")
    err = capsys.readouterr().err
    shown = [float(v) for v in re.findall(r"pretrain epoch \d/2:[^\r\n]*loss=(\d+\.\d{4})", err)]
    assert len(shown) >= 4, err[-2000:]
    # Each is a step's loss as the engine reported it (4 decimals), the latest at the time.
    assert all(any(abs(v - loss) < 6e-5 for loss in recorded) for v in shown)
    assert len(set(shown)) > 1   # live: it changes as training goes


def test_the_files_a_stage_names_are_its_dvc_outputs() -> None:
    """What `[stage] wrote:` lists covers every out and metrics file dvc.yaml gives the stage, and no more."""
    import yaml

    from trainlab.stage_registry import STAGES
    from trainlab.testing import ROOT

    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        declared = [Path(next(iter(o)) if isinstance(o, dict) else o)
                    for o in (*stage.get("outs", []), *stage.get("metrics", []))]
        named = STAGES[name].outputs
        assert all(any(d == n or n in d.parents for n in named) for d in declared), (name, declared, named)
        assert all(any(d == n or n in d.parents for d in declared) for n in named), (name, declared, named)
