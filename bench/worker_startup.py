"""Search-worker start-up alone: spawn vs forkserver (preloaded) vs fork, time until every worker is ready.

A worker is "ready" when it has imported what its first trial needs (torch, Optuna, the
search loop and trial code, and the MLflow modules `trainlab.tracking` imports lazily on
the first trial), i.e. the fixed cost a search pays before its first trial can start.
The parent first imports what `trainlab search` itself has imported by the time it starts
its workers (torch, Optuna, MLflow), so `fork` measures what forking that parent costs.
Each method runs in a fresh parent process, methods interleaved per repetition.

    .venv/bin/python bench/worker_startup.py                  # 2 workers, 3 repetitions
    .venv/bin/python bench/worker_startup.py --workers 4 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

# What a worker imports before and during its first trial (trainlab.tracking imports MLflow lazily).
FIRST_TRIAL_MODULES = ["torch", "optuna", "trainlab.search.loop", "trainlab.search.trials", "mlflow",
                       "mlflow.tracking", "mlflow.entities", "mlflow.pytorch", "sqlalchemy.exc"]
PARENT_MODULES = ["torch", "optuna", "mlflow", "mlflow.tracking", "trainlab.search.runner"]
METHODS = ("spawn", "forkserver", "fork")


def _ready(queue, started: float) -> None:
    import importlib

    for name in FIRST_TRIAL_MODULES:
        importlib.import_module(name)
    queue.put(time.time() - started)


def measure(method: str, workers: int) -> dict:
    """In this (fresh) process: import as the search parent has, then start workers and wait."""
    import importlib
    import multiprocessing

    for name in PARENT_MODULES:
        importlib.import_module(name)
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(FIRST_TRIAL_MODULES)
    queue = context.Queue()
    started = time.time()
    procs = [context.Process(target=_ready, args=(queue, started)) for _ in range(workers)]
    for proc in procs:
        proc.start()
    ready = sorted(queue.get(timeout=600) for _ in procs)
    for proc in procs:
        proc.join()
    return {"method": method, "ready_s": ready}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(measure(sys.argv[2], int(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    args = parser.parse_args()
    with open("/proc/loadavg") as f:
        print(f"# bench/worker_startup.py {' '.join(sys.argv[1:])}; load {f.read().split()[:3]}")
    last: dict[str, list[float]] = {m: [] for m in args.methods}
    for rep in range(args.repeats):
        for method in args.methods:
            out = subprocess.run([sys.executable, __file__, "--child", method, str(args.workers)],
                                 capture_output=True, text=True, check=True).stdout
            ready = json.loads(out.splitlines()[-1])["ready_s"]
            last[method].append(ready[-1])
            print(f"rep {rep + 1} {method}: workers ready after {', '.join(f'{s:.2f}' for s in ready)} s", flush=True)
    print()
    for method in args.methods:
        print(f"{method}: all {args.workers} workers ready, median {statistics.median(last[method]):.2f} s "
              f"(min {min(last[method]):.2f}, max {max(last[method]):.2f})")
    for method in args.methods[1:]:
        ratio = statistics.median(last[method]) / statistics.median(last[args.methods[0]])
        print(f"ratio {method}/{args.methods[0]} ready_s = {ratio:.3f}")


if __name__ == "__main__":
    main()
