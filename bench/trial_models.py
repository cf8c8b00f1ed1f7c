"""What logging a search trial's model as an MLflow model costs, against the trial itself.

A tiny project (trainlab.testing's make_project, shrunk params) is prepared, pretrained
and searched once (one worker, pruning off, tracking.log_trial_models true, so its trials
are timed with their logging in). Then, in a fresh process inside that project, one
trial's model (models/search/top1.pt) is logged the way a trial logs it, into a finished trial's run
(whose metrics MLflow links to each logged model), `--logs` times in a row: the first
call pays the process's one-time imports (in a search worker, its first trial pays
them), the later ones are the steady cost of every further trial. Each call is timed in
wall and CPU seconds (CPU time moves less with the machine's load than wall time).

The trial's own time is the study's median trial (start to end, its logging included).
The ratio printed last is the steady cost of one model over that median trial.

    .venv/bin/python bench/trial_models.py
    .venv/bin/python bench/trial_models.py --trials 8 --epochs 60 --logs 10
    .venv/bin/python bench/trial_models.py --quick
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 trials of 1 epoch, 3 logs")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=60, help="finetune epochs per trial (60: ~2.5 s trials)")
    parser.add_argument("--logs", type=int, default=8, help="model logs timed in the child")
    parser.add_argument("--log-child", type=Path, help=argparse.SUPPRESS)   # child mode: time the logs
    return parser.parse_args()


def log_child(project: Path, logs: int) -> None:
    """Child mode: log top1.pt `logs` times into a finished trial's run, as the trial logged
    its own (with that run's metrics, which MLflow links to each logged model); wall and
    CPU seconds of each call."""
    os.chdir(project)
    import mlflow

    from trainlab import paths
    from trainlab.config import load_params
    from trainlab.data import task_info
    from trainlab.ensemble.combine import load_any
    from trainlab.serving import served_spec
    from trainlab.tracking import resolve_uri
    from trainlab.tracking.logged_model import log_model

    params = load_params("params.yaml")
    mlflow.set_tracking_uri(resolve_uri(params))
    # Slot 0's trial run, found by its tag (its name also shows the values it tried).
    trial_run = mlflow.search_runs(experiment_names=[params.tracking.experiment], output_format="list",
                                   filter_string="tags.`optuna.slot` = '0'")[0].info.run_id
    model, blob = load_any(paths.SEARCH_MODELS / "top1.pt")
    info = task_info(paths.PREPARED, "target")
    wall, cpu = [], []
    for i in range(logs):
        started, started_cpu = time.perf_counter(), time.process_time()
        log_model(trial_run, served_spec(model, info, "target", blob["meta"].get("temperature", 1.0)),
                  f"trial-bench-{i}")
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    C.emit_result({"wall_s": wall, "cpu_s": cpu})


def main() -> None:
    args = parse_args()
    if args.log_child:
        return log_child(args.log_child, args.logs)
    if args.quick:
        args.trials, args.epochs, args.logs = 2, 1, 3
    cores = os.cpu_count() or 1
    C.print_header("logging a search trial's model to MLflow vs the trial", ["bench/trial_models.py", *sys.argv[1:]],
                   cores)
    search = {"search.n_trials": args.trials, "search.epochs": args.epochs, "search.pruner": "none",
              "search.workers": 1, "search.top_k": 2, "trainer.threads": cores, "tracking.log_trial_models": True,
              "data.source.num_samples": 1000, "pretrain.epochs": 1}
    with C.workspace("trial-models") as tmp:
        project = C.make_project(Path(tmp) / "project", C.small_params(**search))
        for stage in ("prepare", "pretrain", "search"):
            C.trainlab([stage], project)
        # search_throughput's child mode reads the study's trial times.
        span, _ = C.run_child([str(C.BENCH / "search_throughput.py"), "--study-span", str(project)])
        logged, _ = C.run_child([__file__, "--log-child", str(project), "--logs", str(args.logs)])
    trial = C.median(span["trial_s"])
    steady_wall, steady_cpu = logged["wall_s"][1:], logged["cpu_s"][1:]
    print(f"# {args.trials} trials of {args.epochs} finetune epochs (trainlab.testing's small model and data), "
          f"1 worker, pruner none; load {C.load_average()}")
    print()
    print(C.table([["median trial (its model logged)", f"{trial:.3f}", C.spread(span["trial_s"]), "-"],
                   ["first log in a process", f"{logged['wall_s'][0]:.3f}", "-", f"{logged['cpu_s'][0]:.3f}"],
                   [f"later logs (median of {len(steady_wall)})", f"{C.median(steady_wall):.3f}",
                    C.spread(steady_wall), f"{C.median(steady_cpu):.3f}"]],
                  ["", "wall s", "spread", "CPU s"]))
    print()
    C.print_ratio("model_log/trial", C.median(steady_wall) / trial)


if __name__ == "__main__":
    main()
