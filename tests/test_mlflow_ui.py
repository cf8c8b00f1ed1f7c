"""The MLflow UI shows a pipeline's runs and their metric charts (headless Chromium against `mlflow ui`).

CI's set-up installs Chromium; without it this test fails rather than skips.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from trainlab.testing import BIN, clean_env

from helpers.tracking import client_of, experiment_id, only_run
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


@pytest.fixture
def ui(prepared_project: Path, tmp_path: Path):
    """`mlflow ui` over the prepared project's store (cwd elsewhere: it writes nothing into the project)."""
    port, log = free_port(), tmp_path / "ui.log"
    cmd = [str(BIN / "mlflow"), "ui", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{prepared_project / 'mlflow.db'}"]
    with open(log, "w") as out:
        process = subprocess.Popen(cmd, cwd=tmp_path, env=clean_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", process)
    try:
        wait_healthy(server, log)
        yield server
    finally:
        server.kill()


def test_ui_shows_the_runs_and_their_metric_charts(ui: Server, prepared_project: Path, tmp_path: Path) -> None:
    assert CHROMIUM.exists(), "headless Chromium is required: apt-get install -y chromium"
    client = client_of(prepared_project)
    exp, pretrain = experiment_id(client), only_run(prepared_project, "pretrain")
    run_id = pretrain.info.run_id

    # Wide: the table draws only the columns in view (Run name, Created, Dataset, Duration, Source, ...).
    runs_page = chromium(tmp_path, "runs", f"{ui.uri}/#/experiments/{exp}/runs?{MODEL_TRAINING}",
                         "--window-size=2400,900", "--dump-dom")
    # The runs table links the run by id under its name.
    assert re.search(rf'href="#/experiments/{exp}/runs/{run_id}"><span[^>]*>pretrain</span>', runs_page), \
        runs_page[-2000:]
    assert re.search(r">prepare</span>", runs_page)
    # MLflow's own lineage columns, not "-": Dataset (the splits read, with digest) and Source.
    # ("Created by" is not among the table's default columns; tests/test_mlflow_lineage.py reads mlflow.user.)
    assert re.search(r">mnist1d-source-train \([0-9a-f]{36}\)<", runs_page)
    assert re.search(r">trainlab pretrain</span>", runs_page)
    # The run table as README's MLflow section shows it (docs/mlflow-run-table.png is one of these).
    table = tmp_path / "mlflow-run-table.png"
    chromium(tmp_path, "table", f"{ui.uri}/#/experiments/{exp}/runs?{MODEL_TRAINING}", "--window-size=1600,520",
             "--hide-scrollbars", f"--screenshot={table}")
    assert table.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and table.stat().st_size > 20_000

    run_url = f"{ui.uri}/#/experiments/{exp}/runs/{run_id}/model-metrics?{MODEL_TRAINING}"
    # A tall window: the charts are drawn only once scrolled into view.
    charts = chromium(tmp_path, "charts", run_url, "--window-size=1400,6000", "--dump-dom")
    assert "js-plotly-plot" in charts
    training_keys = [key for key in pretrain.data.metrics if not key.startswith("system/")]
    missing = [key for key in training_keys if f'title="{key}"' not in charts
               or f"pretrain ({key})" not in charts]   # a chart card per metric, with the run in its legend
    assert not missing, missing
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
