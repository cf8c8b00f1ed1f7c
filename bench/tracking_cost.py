"""What MLflow tracking costs a training run, and why trainlab writes metrics with log_batch.

1. The default pretrain workload trained by trainlab's train_source twice over, each
   repetition a fresh process, interleaved: with the tracking hook (per-step metrics
   buffered and written with log_batch into a sqlite store) and with no tracking at all.
   The ratio compares the wall time of the training call; opening and closing the MLflow
   run (a fixed cost per stage, dominated by the sqlite schema set-up of a new store)
   is printed beside it.
   A third kind, tracked with MLflow's system metrics off, gives their cost: the wall
   time on/off, and directly the CPU seconds of MLflow's sampling thread over the training
   time (the wall ratio of two runs is noisier than the ~0.1% it has to resolve).
2. A microbenchmark on a fresh sqlite store: `mlflow.log_metric` per call against
   `MlflowClient.log_batch` per value (1000 values per call, MLflow's limit).

    .venv/bin/python bench/tracking_cost.py            # full workload, 5 repetitions
    .venv/bin/python bench/tracking_cost.py --epochs 3
    .venv/bin/python bench/tracking_cost.py --quick
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny data, 1 epoch, 1 repetition, few calls")
    parser.add_argument("--epochs", type=int, default=None, help="cut pretrain.epochs (default: params.yaml's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--source-samples", type=int, default=None,
                        help="cut data.source.num_samples (default: params.yaml's 40000)")
    parser.add_argument("--threads", type=int, default=None, help="default: params.yaml's trainer.threads")
    parser.add_argument("--calls", type=int, default=300, help="log_metric calls in the microbenchmark")
    return parser.parse_args()


def microbenchmark(directory: Path, calls: int, batch_values: int, batches: int) -> tuple[float, float]:
    """(ms per log_metric call, ms per value in log_batch) on a fresh sqlite store."""
    import logging

    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    uri = f"sqlite:///{directory / 'micro.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment = client.create_experiment("bench")
    run_id = client.create_run(experiment).info.run_id
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metric("warmup", 0.0, step=0)
        started = time.perf_counter()
        for step in range(calls):
            mlflow.log_metric("train/loss", 1.0 / (step + 1), step=step)
        per_call = (time.perf_counter() - started) / calls
    now = int(time.time() * 1000)
    started = time.perf_counter()
    for b in range(batches):
        metrics = [Metric("batch/loss", 1.0 / (i + 1), now, b * batch_values + i) for i in range(batch_values)]
        client.log_batch(run_id, metrics=metrics, synchronous=True)
    per_value = (time.perf_counter() - started) / (batches * batch_values)
    client.set_terminated(run_id)
    stored = len(client.get_metric_history(run_id, "batch/loss"))
    assert stored == batches * batch_values, f"log_batch stored {stored} values"
    return per_call * 1000, per_value * 1000


def main() -> None:
    args = parse_args()
    if args.quick:
        args.repeats, args.calls = 1, 20
    params = C.workload_params(args, **{"trainer.progress": "log"})
    threads = params["trainer"]["threads"]
    C.print_header("tracking cost: trainlab train_source with and without MLflow tracking",
                   ["bench/tracking_cost.py", *sys.argv[1:]], threads)
    with C.workspace("tracking") as tmp:
        base = Path(tmp)
        per_call_ms, per_value_ms = microbenchmark(base, args.calls, 100 if args.quick else 1000,
                                                   1 if args.quick else 5)
        print(f"mlflow.log_metric: {per_call_ms:.2f} ms per call ({args.calls} calls); "
              f"MlflowClient.log_batch: {per_value_ms:.3f} ms per value; sqlite store", flush=True)
        data = C.prepare_data(base / "shared", params)
        print(f"# workload: {params['model']['arch']} width {params['model']['width']}, "
              f"{C.source_train_samples(data)} source train samples, epochs {params['pretrain']['epochs']}, "
              f"log_every_steps {params['trainer']['log_every_steps']}, {args.repeats} repetitions", flush=True)
        results = C.interleaved_workloads(["trainlab-untracked", "trainlab-nosysmetrics", "trainlab"],
                                          args.repeats, base, data, params, threads)
    untracked = C.median([r["train_s"] for r in results["trainlab-untracked"]])
    tracked = C.median([r["train_s"] for r in results["trainlab"]])
    setup = C.median([r["tracking_setup_s"] + r["tracking_close_s"] for r in results["trainlab"]])
    rows = [[name, f"{C.median([r['train_s'] for r in runs]):.2f}", C.spread([r["train_s"] for r in runs]),
             f"{C.median([r['process_s'] for r in runs]):.1f}"]
            for name, runs in (("no tracking", results["trainlab-untracked"]),
                               ("tracking, system metrics off", results["trainlab-nosysmetrics"]),
                               ("tracking, system metrics on (default)", results["trainlab"]))]
    print()
    print(C.table(rows, ["run", "training wall s (median)", "min..max", "process s"]))
    print(f"opening + closing the MLflow run (fresh sqlite store): {setup:.2f} s, not in the ratio below; "
          f"with it: {(tracked + setup) / untracked:.3f}")
    fastest = {k: min(r["train_s"] for r in runs) for k, runs in results.items()}
    print(f"fastest repetition of each (the least disturbed by other load): tracked/untracked "
          f"{fastest['trainlab'] / fastest['trainlab-untracked']:.3f}")
    # The direct measure, immune to run-to-run noise: seconds the training thread spent
    # inside the tracking hook's calls, over the tracked run's own training time.
    in_hook = [r["tracking_hook_s"] / r["train_s"] for r in results["trainlab"]]
    print(f"training thread inside the tracking hook: median {100 * C.median(in_hook):.2f}% of training "
          f"time ({C.spread([100 * share for share in in_hook])} %); a background write thread, when "
          f"there is one, is not in this figure but in the wall-time ratio")
    print()
    C.print_ratio("log_metric_per_call/log_batch_per_value", per_call_ms / per_value_ms)
    C.print_ratio("tracked/untracked_on_training_thread",
                  C.median([r["train_s"] / (r["train_s"] - r["tracking_hook_s"]) for r in results["trainlab"]]))
    C.print_ratio("tracked/untracked", tracked / untracked)
    sysoff = C.median([r["train_s"] + r["tracking_close_s"] for r in results["trainlab-nosysmetrics"]])
    syson = C.median([r["train_s"] + r["tracking_close_s"] for r in results["trainlab"]])
    thread = [r["system_thread_cpu_s"] / r["train_s"] for r in results["trainlab"]]
    print(f"system metrics: their sampling thread used median {100 * C.median(thread):.3f}% of training time "
          f"in CPU ({C.spread([100 * t for t in thread])} %)")
    C.print_ratio("system_metrics_on/off", syson / sysoff)   # training + closing the run
    C.print_ratio("system_metrics_thread_cpu/training", C.median(thread))


if __name__ == "__main__":
    main()
