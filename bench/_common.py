"""Helpers the benchmarks share: the machine header, medians, ratios, child processes, projects.

Every benchmark prints the machine it ran on first and its ratio line last
(`ratio a/b = 1.03`), so a result pasted into bench/RESULTS.md carries its context.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
PYTHON = sys.executable
BIN = Path(PYTHON).parent
RESULT_TAG = "BENCH_RESULT "   # a child's one JSON line of results starts with this


# ------------------------------------------------------------------------- machine
def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine_header(threads: int | None = None) -> str:
    """One block naming the CPU, cores, torch, thread settings, date and load."""
    import torch

    lines = [
        f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"cpu: {cpu_model()}, {os.cpu_count()} logical cores",
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"torch default threads {torch.get_num_threads()} (interop {torch.get_num_interop_threads()})"
        + (f", benchmark threads {threads}" if threads is not None else ""),
        "env: " + (", ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
                             if k in os.environ) or "OMP_NUM_THREADS/MKL_NUM_THREADS unset"),
        f"load average (1/5/15 min) at start: {load_average()}",
    ]
    return "\n".join("# " + line for line in lines)


def print_header(title: str, command: Sequence[str], threads: int | None = None) -> None:
    print(f"# {title}")
    print(f"# command: .venv/bin/python {' '.join(command)}")
    print(machine_header(threads), flush=True)


# -------------------------------------------------------------------------- numbers
def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float]) -> str:
    """min..max of repetitions: how noisy the machine was."""
    return f"{min(values):.3f}..{max(values):.3f}" if values else "-"


def print_ratio(name: str, value: float) -> None:
    print(f"ratio {name} = {value:.3f}", flush=True)


def table(rows: list[list[Any]], header: list[str]) -> str:
    """A plain Markdown table (pastes straight into RESULTS.md)."""
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    fmt = lambda row: "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"
    return "\n".join([fmt(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *[fmt(r) for r in cells[1:]]])


# ------------------------------------------------------------------- child processes
def env(**extra: str) -> dict[str, str]:
    """A clean environment: this venv first, no inherited MLflow/DVC settings."""
    from trainlab.testing import clean_env

    return clean_env(**extra)


def run_child(args: Sequence[str], cwd: Path | None = None, timeout: float = 3600,
              **extra_env: str) -> tuple[dict, float]:
    """Run `python args...` in a fresh process; returns (its BENCH_RESULT json, process wall s)."""
    started = time.perf_counter()
    proc = subprocess.run([PYTHON, *args], cwd=cwd, env=env(**extra_env), capture_output=True,
                          text=True, timeout=timeout)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):]), wall
    raise RuntimeError(f"{' '.join(args)} printed no result line\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def emit_result(result: dict) -> None:
    """A child's last word: one JSON line for run_child."""
    print(RESULT_TAG + json.dumps(result), flush=True)


def timed(cmd: Sequence[str], cwd: Path, timeout: float = 3600, **extra_env: str) -> float:
    """Wall seconds of one command; its failure is an error, not a fast result."""
    return timed_cpu(cmd, cwd, timeout, **extra_env)[0]


def timed_cpu(cmd: Sequence[str], cwd: Path, timeout: float = 3600, **extra_env: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds user+sys) of one command and the children it waited for.

    On a loaded machine the wall time of a mostly single-threaded command grows with the
    load while its CPU time barely moves: the CPU time is the better guess of its wall
    time on a quiet machine.
    """
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(list(cmd), cwd=cwd, env=env(**extra_env), capture_output=True, text=True,
                          timeout=timeout)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def output(cmd: Sequence[str], cwd: Path, timeout: float = 600, **extra_env: str) -> str:
    """stdout+stderr of a command that must succeed."""
    proc = subprocess.run(list(cmd), cwd=cwd, env=env(**extra_env), capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


# ------------------------------------------------------------------------- projects
# Projects are made the tests' way (trainlab.testing): the one way to make them.
from trainlab.testing import copy_project, make_project, set_dotted, trainlab, write_params  # noqa: E402,F401 (the benchmarks use them as C.make_project etc.)


def real_params(**overrides: Any) -> dict:
    """The project's params.yaml (unshrunk) with dotted-key overrides."""
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in overrides.items():
        set_dotted(params, key, value)
    return params


# --quick: a workload that only proves the script still runs
QUICK_WORKLOAD = {"data.source.num_samples": 1000, "pretrain.epochs": 1, "trainer.threads": 1}
# the command-line flags the training benchmarks share, and the params key each sets
WORKLOAD_FLAGS = {"epochs": "pretrain.epochs", "source_samples": "data.source.num_samples",
                  "arch": "model.arch", "threads": "trainer.threads"}


def workload_params(args: Any, **overrides: Any) -> dict:
    """params.yaml's pretrain workload, cut by whichever WORKLOAD_FLAGS `args` has, then
    `overrides`; --quick (if `args` has it) shrinks it last."""
    for flag, key in WORKLOAD_FLAGS.items():
        if getattr(args, flag, None):
            overrides[key] = getattr(args, flag)
    if getattr(args, "quick", False):
        overrides.update(QUICK_WORKLOAD)
    return real_params(**overrides)


def small_params(**overrides: Any) -> dict:
    """trainlab.testing's shrunk params (tiny model and data) plus dotted-key overrides."""
    from trainlab import testing

    params = testing.small_params()
    for key, value in overrides.items():
        set_dotted(params, key, value)
    return params


def prepare_data(directory: Path, params: dict) -> Path:
    """Write params.yaml and data/prepared (the prepare step, in-process) into `directory`."""
    from trainlab.config import params_hash, validate
    from trainlab.data.build import prepare

    directory.mkdir(parents=True, exist_ok=True)
    write_params(directory, params)
    validated = validate(params)
    prepare(validated.data, directory / "data" / "prepared", params_hash(validated))
    return directory


def fresh_run_dir(base: Path, name: str, shared: Path, params: dict) -> Path:
    """A directory per training run: its own mlflow.db, checkpoints, logs; the data is shared."""
    run_dir = base / name
    (run_dir / "data").mkdir(parents=True)
    os.symlink(shared / "data" / "prepared", run_dir / "data" / "prepared")
    write_params(run_dir, params)
    return run_dir


def interleaved_workloads(kinds: Sequence[str], repeats: int, base: Path, shared: Path, params: dict,
                          threads: int) -> dict[str, list[dict]]:
    """Run bench/_workloads.py KIND in a fresh process per repetition, kinds interleaved (A B C A B C)."""
    import shutil

    results: dict[str, list[dict]] = {k: [] for k in kinds}
    for rep in range(repeats):
        for kind in kinds:
            run_dir = fresh_run_dir(base, f"{kind}-{rep}", shared, params)
            result, wall = run_child([str(BENCH / "_workloads.py"), kind, "--project", str(run_dir),
                                      "--threads", str(threads)])
            result["process_s"] = wall
            result["per_epoch_s"] = result["train_s"] / max(result["epochs"], 1)
            results[kind].append(result)
            print(f"rep {rep + 1} {kind:18s} {result['per_epoch_s']:.3f} s/epoch over {result['epochs']} "
                  f"epochs, process {wall:.1f} s, val/acc {result['val_acc']:.4f}, threads {result['threads']}, "
                  f"load {load_average()}", flush=True)
            shutil.rmtree(run_dir)
    return results


def source_train_samples(project: Path) -> int:
    manifest = json.loads((project / "data/prepared/manifest.json").read_text())
    return manifest["tasks"]["source"]["splits"]["train"]["num_samples"]


def workspace(prefix: str) -> tempfile.TemporaryDirectory:
    """A temporary directory for one benchmark run, removed afterwards."""
    return tempfile.TemporaryDirectory(prefix=f"trainlab-bench-{prefix}-")


@contextlib.contextmanager
def kept_workspace(prefix: str, keep: bool) -> Iterator[Path]:
    """workspace(), left in place with its path printed when `keep` (a benchmark's --keep)."""
    base = Path(tempfile.mkdtemp(prefix=f"trainlab-bench-{prefix}-"))
    try:
        yield base
    finally:
        if keep:
            print(f"# projects and logs kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
