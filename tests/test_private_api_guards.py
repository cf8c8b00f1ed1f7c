"""Where trainlab once read a private API of the standard library or of a dependency, the public
replacement still does the job (issue 27 item 7):

- cli.exit_now ran `atexit._run_exitfuncs()` before `os._exit`; it now lets the interpreter's own
  exit run the handlers and ends the process from the last of them, before the module teardown.
- tracking/mlflow_fields.SystemMetrics.stop read MLflow's `SystemMetricsMonitor._logging_step`;
  it now counts the samples through the public `publish_metrics` that MLflow's thread calls.

The private parts of torch still read (an AMX check, torch.compile's wrapped module, the
dynamo module preloaded) sit behind torch's upper pin, each with a test below that fails on
the release that drops it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainlab.testing import clean_env

TEARDOWN_SCRIPT = """
import atexit, sys
from pathlib import Path
from trainlab.cli import exit_now
folder = Path(sys.argv[1])

class Marker:   # freed by the interpreter's teardown of __main__, which exit_now skips
    def __del__(self):
        (folder / "torn-down").write_text("yes")

marker = Marker()
atexit.register(lambda: (folder / "atexit-ran").write_text("yes"))
if sys.argv[2] == "exit_now":
    exit_now(5)
sys.exit(5)
"""


@pytest.mark.parametrize("how", ["exit_now", "sys.exit"])
def test_exit_now_skips_the_teardown_and_nothing_else(tmp_path: Path, how: str) -> None:
    """sys.exit is the control: it shows that the marker does see a teardown."""
    done = subprocess.run([sys.executable, "-c", TEARDOWN_SCRIPT, str(tmp_path), how], capture_output=True,
                          text=True, timeout=120, env=clean_env())
    assert done.returncode == 5, done.stderr
    assert done.stderr == ""
    assert (tmp_path / "atexit-ran").read_text() == "yes"
    assert (tmp_path / "torn-down").exists() == (how == "sys.exit")


def system_metrics(tmp_path: Path, sampling_s: float, running_s: float):
    """A SystemMetrics on a real run in a sqlite store, stopped after `running_s`; (it, the steps
    of one system metric's history)."""
    from mlflow.tracking import MlflowClient

    from trainlab.tracking.mlflow_fields import SystemMetrics

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("guards"))
    system = SystemMetrics(run.info.run_id, uri, sampling_s=sampling_s)
    time.sleep(running_s)
    system.stop()
    history = client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
    client.set_terminated(run.info.run_id)
    return system, sorted(m.step for m in history)


def test_a_run_shorter_than_the_sampling_interval_gets_its_one_sample(tmp_path: Path) -> None:
    system, steps = system_metrics(tmp_path, sampling_s=60.0, running_s=0.2)
    assert system.published == 1 and steps == [0]


def test_the_samples_mlflows_thread_publishes_are_counted(tmp_path: Path) -> None:
    """If MLflow's thread stopped publishing through publish_metrics, the count would stay 0 and
    stop would add a sample at a step the thread already used."""
    system, steps = system_metrics(tmp_path, sampling_s=0.2, running_s=2.0)
    assert system.published >= 2
    assert steps == list(range(system.published))


# Private parts of torch that trainlab still reads, each behind torch's upper pin (<2.14 in
# pyproject.toml) and a check here that fails on the torch release that drops it.
def test_torch_still_has_the_amx_check_precision_auto_reads() -> None:
    # engine/runtime.py: precision auto picks bf16 on a CPU with AMX tiles; torch has no public check.
    import torch

    assert isinstance(torch.cpu._is_amx_tile_supported(), bool)


def test_a_compiled_module_still_exposes_the_module_it_wraps() -> None:
    # engine/parallel.py no_sync: FSDP2's gradient-sync switch is on the module torch.compile wraps.
    import torch

    model = torch.nn.Linear(2, 2)
    assert torch.compile(model)._orig_mod is model   # compiles nothing until called


def test_the_dynamo_module_search_workers_preload_still_imports() -> None:
    # search/workers.py PRELOAD warms torch._dynamo (the optimizer's constructor imports it) once.
    import importlib

    assert importlib.import_module("torch._dynamo").__name__ == "torch._dynamo"
