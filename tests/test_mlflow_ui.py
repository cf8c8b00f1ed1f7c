"""The MLflow UI shows a pipeline's runs and their metric charts (headless Chromium against `mlflow ui`),
and the registry after a pipeline and two experiments: `champion` still on the best version.

CI's set-up installs Chromium; without it these tests fail rather than skip.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from trainlab.dvc_metrics import MAX_VALUES
from trainlab.testing import BIN, clean_env, dvc_metric_values, make_project, run

from helpers.tracking import client_of, experiment_id, only_run, stage_runs
from helpers.tracking_server import Server, free_port, wait_healthy

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         # Without it the lazily drawn chart cards may never get a frame under virtual time
         # and stay spinners in the dump.
         "--run-all-compositor-stages-before-draw"]
# The sidebar's workflow switch defaults to GenAI on a fresh profile; this selects "Model training".
MODEL_TRAINING = "workflowType=machine_learning"
README = Path(__file__).resolve().parents[1] / "README.md"
# The README's one-liner that makes `dvc exp show` readable (trainlab.dvc_metrics says why it works).
EXP_SHOW = ("exp", "show", "--only-changed", "--drop", "Created|State|Executor|.*/")


def chromium(tmp_path: Path, name: str, url: str, *options: str) -> str:
    """Load `url` in a fresh profile, let 15 s of virtual time pass, return stdout (the DOM with --dump-dom)."""
    cmd = [str(CHROMIUM), *FLAGS, f"--user-data-dir={tmp_path / f'profile-{name}'}", "--virtual-time-budget=15000",
           *options, url]
    browser = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               start_new_session=True)
    try:
        out, _ = browser.communicate(timeout=240)
    finally:
        if browser.poll() is None:   # hung: take its renderer and GPU helpers down with it
            os.killpg(browser.pid, signal.SIGKILL)
            browser.wait()
    assert browser.returncode == 0, f"chromium exited {browser.returncode} on {url}"
    return out


def start_ui(project: Path, tmp_path: Path) -> Server:
    """`mlflow ui` over the project's store (cwd elsewhere: it writes nothing into the project)."""
    port, log = free_port(), tmp_path / "ui.log"
    cmd = [str(BIN / "mlflow"), "ui", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{project / 'mlflow.db'}"]
    with open(log, "w") as out:
        process = subprocess.Popen(cmd, cwd=tmp_path, env=clean_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", process)
    try:
        wait_healthy(server, log)
    except BaseException:
        server.kill()
        raise
    return server


@pytest.fixture
def ui(prepared_project: Path, tmp_path: Path):
    """`mlflow ui` over the prepared project's store."""
    server = start_ui(prepared_project, tmp_path)
    try:
        yield server
    finally:
        server.kill()


def text_of(dom: str) -> str:
    """The page's text, tags dropped and spaces collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)).replace("&nbsp;", " ")


def test_ui_shows_the_runs_and_their_metric_charts(ui: Server, prepared_project: Path, tmp_path: Path) -> None:
    assert CHROMIUM.exists(), "headless Chromium is required: apt-get install -y chromium"
    client = client_of(prepared_project)
    exp, pretrain = experiment_id(client), only_run(prepared_project, "pretrain")
    run_id = pretrain.info.run_id

    # Wide: the table draws only the columns in view (Run name, Created, Dataset, Duration, Source, ...).
    runs_page = chromium(tmp_path, "runs", f"{ui.uri}/#/experiments/{exp}/runs?{MODEL_TRAINING}",
                         "--window-size=2400,900", "--dump-dom")
    # The runs table links the run by id under its name: the stage and the id of the pipeline run
    # it belongs to (a DVC experiment's name under `dvc exp run`), so two runs of a stage differ.
    pipeline = pretrain.data.tags["trainlab.pipeline_run"]
    assert re.search(rf'href="#/experiments/{exp}/runs/{run_id}"><span[^>]*>pretrain · {pipeline}</span>',
                     runs_page), runs_page[-2000:]
    assert re.search(r">prepare · [0-9a-f]{12}</span>", runs_page)
    # MLflow's own lineage columns, not "-": Dataset (the splits read, with digest) and Source.
    # ("Created by" is not among the table's default columns; tests/test_mlflow_lineage.py reads mlflow.user.)
    assert re.search(r">mnist1d-source-train \([0-9a-f]{36}\)<", runs_page)
    assert re.search(r">trainlab pretrain</span>", runs_page)
    # The run table as docs/mlflow.md shows it (docs/mlflow-run-table.png is one of these).
    table = tmp_path / "mlflow-run-table.png"
    chromium(tmp_path, "table", f"{ui.uri}/#/experiments/{exp}/runs?{MODEL_TRAINING}", "--window-size=1600,520",
             "--hide-scrollbars", f"--screenshot={table}")
    assert table.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and table.stat().st_size > 20_000

    run_url = f"{ui.uri}/#/experiments/{exp}/runs/{run_id}/model-metrics?{MODEL_TRAINING}"
    # A tall window: the charts are drawn only once scrolled into view.
    charts = chromium(tmp_path, "charts", run_url, "--window-size=1400,6000", "--dump-dom")
    assert "js-plotly-plot" in charts
    training_keys = [key for key in pretrain.data.metrics if not key.startswith("system/")]
    missing = [key for key in training_keys if f'title="{key}"' not in charts   # a chart card per metric,
               or f"{pretrain.info.run_name} ({key})" not in charts]          # with the run in its legend
    assert not missing, missing
    # The chart tab opens on the curves: the one-point scores (final.*) come after train/ and val/.
    first_score = min(charts.index(f'title="{key}"') for key in training_keys if key.startswith("final."))
    assert max(charts.index(f'title="{key}"') for key in ("train/loss", "val/loss", "val/acc")) < first_score
    # System metrics have their own tab.
    system = chromium(tmp_path, "system", run_url.replace("/model-metrics?", "/system-metrics?"),
                      "--window-size=1400,3000", "--dump-dom")
    assert 'title="system/cpu_utilization_percentage"' in system

    screenshot = tmp_path / "mlflow-run-page.png"
    chromium(tmp_path, "shot", run_url, "--window-size=1400,1200", f"--screenshot={screenshot}")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 50_000
    if os.environ.get("TRAINLAB_TEST_ARTIFACTS"):
        target = Path(os.environ["TRAINLAB_TEST_ARTIFACTS"])
        target.mkdir(parents=True, exist_ok=True)
        for shot in (screenshot, table):
            shutil.copy(shot, target / shot.name)


def dvc(project: Path, *args: str) -> str:
    return run([str(BIN / "dvc"), *args], project, timeout=900).stdout


def wait_for_queue(project: Path, timeout_s: float = 900) -> str:
    """`dvc queue status` once nothing is queued or running (DVC's workers run in the background)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = dvc(project, "queue", "status")
        if not any(word in status for word in ("Queued", "Running")):
            return status
        assert time.monotonic() < deadline, f"queue still busy after {timeout_s} s:\n{status}"
        time.sleep(3)


def assert_the_documented_exp_show_is_readable(project: Path) -> None:
    """The README's `dvc exp show` one-liner, after two experiments: at most 160 characters
    wide, with the champion's figures and the params the experiments changed."""
    assert f"dvc exp show {' '.join(EXP_SHOW[2:-1])} '{EXP_SHOW[-1]}'" in README.read_text()
    shown = dvc(project, *EXP_SHOW)
    lines = [line.rstrip() for line in shown.splitlines() if line.strip()]
    assert max(map(len, lines)) <= 160, shown
    header = lines[1].split()      # under the table's top rule
    assert {"acc", "acc_low", "acc_high", "loss", "ece", "gain"} <= set(header), shown
    assert {"finetune.epochs", "search.epochs", "data.train_samples", "search.n_trials"} <= set(header), shown
    assert "one-epoch" in shown and "smoke-test" in shown
    assert len(dvc_metric_values(project)) <= MAX_VALUES


def test_champion_stays_on_the_best_version_across_experiments(tmp_path: Path) -> None:
    """`dvc repro`, then an experiment that is worse on the same data (one epoch of everything),
    then a queued smoke test on shrunk data: three versions, `champion` still on the first, the
    other two `challenger` (the latest) and no alias, each with its experiment's name."""
    assert CHROMIUM.exists(), "headless Chromium is required: apt-get install -y chromium"
    project = make_project(tmp_path / "project")
    dvc(project, "repro")
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", "pipeline"], project)
    worse = dvc(project, "exp", "run", "-n", "one-epoch", "-S", "finetune.epochs=1", "-S", "search.epochs=1")
    assert "registered" in worse and "@challenger: held-out loss" in worse and "trainlab promote 2" in worse, worse
    dvc(project, "exp", "run", "--queue", "-n", "smoke-test", "-S", "data.train_samples=60",
        "-S", "search.n_trials=1")
    try:
        dvc(project, "queue", "start")
        status = wait_for_queue(project)
    finally:
        run([str(BIN / "dvc"), "queue", "stop"], project, check=False)
    assert status.count("Success") == 1, status

    assert_the_documented_exp_show_is_readable(project)

    client = client_of(project)
    versions = {str(v.version): v for v in client.search_model_versions("name = 'trainlab'")}
    assert sorted(versions) == ["1", "2", "3"]
    aliases = {alias: str(v) for alias, v in client.get_registered_model("trainlab").aliases.items()}
    assert aliases == {"champion": "1", "challenger": "3"}
    assert "dvc.exp_name" not in versions["1"].tags   # dvc repro: no experiment
    assert versions["2"].tags["dvc.exp_name"] == "one-epoch" and versions["3"].tags["dvc.exp_name"] == "smoke-test"
    loss = {k: float(v.tags["heldout_loss"]) for k, v in versions.items()}
    assert loss["2"] >= loss["1"], loss
    assert versions["2"].tags["trainlab.promotion"].startswith("held-out loss")
    assert versions["3"].tags["trainlab.promotion"].startswith("held out on different data than champion v1")
    evaluates = {r.data.tags.get("dvc.exp_name"): r.info.run_name for r in stage_runs(client, "evaluate")}
    assert evaluates == {None: f"evaluate · {versions['1'].tags['trainlab.pipeline_run']}",
                         "one-epoch": "evaluate · one-epoch", "smoke-test": "evaluate · smoke-test"}

    ui = start_ui(project, tmp_path)
    try:
        page = text_of(chromium(tmp_path, "registry", f"{ui.uri}/#/models/trainlab?{MODEL_TRAINING}",
                                "--window-size=2000,1400", "--dump-dom"))
        runs = text_of(chromium(tmp_path, "runs2", f"{ui.uri}/#/experiments/{experiment_id(client)}/runs?"
                                f"{MODEL_TRAINING}", "--window-size=2400,1400", "--dump-dom"))
    finally:
        ui.kill()
    # The registry's version list, newest first: each version's aliases after its tags, and the
    # experiment that made it first among them.
    rows = {number: page[page.index(f"Version {number} "):] for number in "123"}
    assert rows["3"].index("dvc.exp_name : smoke-test") < rows["3"].index("@ challenger") < rows["3"].index("Version 2")
    assert "dvc.exp_name : one-epoch" in rows["2"][:rows["2"].index("Version 1")]
    assert "@ challenger" not in rows["2"][:rows["2"].index("Version 1")]
    assert "@ champion" in rows["1"] and "@ champion" not in page[:page.index("Version 1 ")]
    # The run table names each experiment's runs after it.
    assert "evaluate · one-epoch" in runs and "evaluate · smoke-test" in runs
