"""What the GPU check relies on, checked on any machine: the engine imports without the
tracking/pipeline tools (GPU nodes often have torch but not MLflow, DVC or Optuna), and
without CUDA the benchmark and the one-command script end as a clean skip."""

from __future__ import annotations

import subprocess

import pytest
import torch

from trainlab.testing import BIN, ROOT, run

# Never imported by the engine, the models, the config schema, tests/test_gpu.py or bench/gpu.py.
HEAVY = {"mlflow", "optuna", "dvc", "click", "sklearn", "yaml", "pandas"}
IMPORTS = """
import importlib.util, json, sys
import trainlab.engine, trainlab.models, trainlab.config, trainlab.launch
sys.path.insert(0, "tests")
import conftest, test_gpu   # what `pytest tests/test_gpu.py` imports (with tests/helpers/engine.py)
spec = importlib.util.spec_from_file_location("bench_gpu", "bench/gpu.py")
spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def test_engine_models_config_gpu_tests_and_gpu_bench_import_no_tracking_or_pipeline_tools() -> None:
    import json

    loaded = set(json.loads(run([str(BIN / "python"), "-c", IMPORTS], ROOT).stdout))
    assert {"torch", "numpy", "pydantic", "trainlab"} <= loaded   # the import did happen
    assert not loaded & HEAVY, sorted(loaded & HEAVY)


@pytest.mark.slow   # three fresh Python processes that import torch: 12-32 s here
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: tests/test_gpu.py runs instead")
def test_without_cuda_the_gpu_bench_and_check_script_skip_cleanly(tmp_path) -> None:
    bench = run([str(BIN / "python"), "bench/gpu.py"], ROOT)
    assert bench.stdout.strip().splitlines() == ["bench/gpu.py: skipped, no CUDA device (it measures GPUs only)"]

    check = subprocess.run(["scripts/gpu_check.sh", str(tmp_path / "out")], cwd=ROOT, capture_output=True,
                           text=True, timeout=300, env={"PATH": f"{BIN}:/usr/bin:/bin", "PYTHON": str(BIN / "python")})
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith("gpu_check: skipped, no CUDA device")
    assert "6 skipped" in check.stdout and "bench/gpu.py: skipped" in check.stdout
    assert not (tmp_path / "out").exists()   # nothing measured, nothing written
