"""The benchmarks in bench/ still run: each script's --quick mode ends with its ratio line.

No timing is asserted (the machine is shared); what is checked is that every script
runs end to end on tiny sizes, prints the machine it ran on, and prints the ratio it
exists for as its last line, as a finite positive number.
"""

from __future__ import annotations

import importlib.util
import math
import re

import pytest

from trainlab.testing import BIN, ROOT, run

RATIO = re.compile(r"^ratio (?P<name>\S.*) = (?P<value>-?\d+\.\d+)$")

# script -> the name of the ratio it must print last
LAST_RATIO = {
    "engine_overhead": ("trainlab/lightning" if importlib.util.find_spec("lightning") is not None
                        else "trainlab/handwritten"),
    "step_overhead": "trainlab_step/handwritten_step",
    "tracking_cost": "system_metrics_thread_cpu/training",
    "precision": None,   # names auto's resolved choice; checked below
    "startup": "noop_dvc_repro/target",
    "search_throughput": "2_workers/1_worker trials_per_min",
    "growth": "cost_per_sample largest/smallest (memory)",
    "pipeline": "pipeline_total/target_10min",
    "strategies": "pipeline/ddp ms_per_step",
    "small_data": "dvc_repro_wall/target_120s",
    "trial_models": "model_log/trial",
    "lr_rule": "knee/10 within one grid step (share of tests)",
}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(LAST_RATIO))
def test_quick_mode_prints_its_ratio_last(script):
    result = run([str(BIN / "python"), f"bench/{script}.py", "--quick"], ROOT)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert any(line.startswith("# cpu: ") for line in lines), result.stdout[:2000]
    assert any(line.startswith("# command: .venv/bin/python bench/") for line in lines), result.stdout[:2000]
    match = RATIO.match(lines[-1])
    assert match, f"last line is not a ratio: {lines[-1]!r}"
    value = float(match["value"])
    assert math.isfinite(value) and value > 0, lines[-1]
    expected = LAST_RATIO[script]
    if expected is None:
        from trainlab.engine.runtime import resolve_precision
        import torch

        auto = resolve_precision("auto", torch.device("cpu"))
        assert match["name"].startswith(f"auto({auto})/fastest_accurate("), lines[-1]
    else:
        assert match["name"] == expected, lines[-1]
