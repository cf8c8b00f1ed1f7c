"""What trainlab's engine costs over a hand-written loop, and over PyTorch Lightning.

The default pretrain workload (params.yaml's model, the prepared source split, its
epochs, batch size and optimizer, validation every epoch) runs three ways:
  handwritten  a minimal PyTorch loop (bench/_workloads.py)
  trainlab     train_source with everything a user gets by default: MLflow tracking to a
               sqlite store, per-step metrics, per-layer grad norms, a checkpoint every
               epoch, progress in log mode
  lightning    Lightning's Trainer on the same model and maths (CSV logger,
               checkpointing on, progress bar and model summary off); skipped when the
               optional bench dependency `lightning` is not installed

Each repetition of each way is a fresh Python process (imports cannot affect each
other), the ways interleave A B C A B C, and every child sets torch's intra-op
threads to the same value after its imports. The figure compared is the wall time of
the training call (training + validation + hooks) divided by the epochs run; the
median over repetitions is reported. Process start, imports and opening the MLflow
run are shown separately and are not in the ratio.

    .venv/bin/python bench/engine_overhead.py            # the full default workload
    .venv/bin/python bench/engine_overhead.py --epochs 3  # shorter, same per-epoch figure
    .venv/bin/python bench/engine_overhead.py --arch logreg   # per-step overhead, little compute
    .venv/bin/python bench/engine_overhead.py --quick     # tiny: does it still run?
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny data, 1 epoch, 1 thread, 1 repetition")
    parser.add_argument("--epochs", type=int, default=None, help="cut pretrain.epochs (default: params.yaml's)")
    parser.add_argument("--repeats", type=int, default=5, help="repetitions of each way (default 5)")
    parser.add_argument("--source-samples", type=int, default=None,
                        help="cut data.source.num_samples (default: params.yaml's 40000)")
    parser.add_argument("--arch", default=None,
                        help="another model.arch, e.g. logreg: almost no compute, so the per-step "
                             "overhead of each loop shows")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads in every child (default: params.yaml's trainer.threads)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.quick:
        args.repeats = 1
    params = C.workload_params(args, **{"trainer.progress": "log"})
    threads = params["trainer"]["threads"]
    C.print_header("engine overhead: handwritten vs trainlab vs Lightning, pretrain workload",
                   ["bench/engine_overhead.py", *sys.argv[1:]], threads)
    kinds = ["handwritten", "trainlab"]
    if importlib.util.find_spec("lightning") is not None:
        kinds.append("lightning")
    else:
        print("# lightning is not installed (.venv/bin/pip install lightning torch==2.13.0): skipping it")
    with C.workspace("engine") as tmp:
        base = Path(tmp)
        data = C.prepare_data(base / "shared", params)
        print(f"# workload: model {params['model']['arch']} width {params['model']['width']} depth "
              f"{params['model']['depth']}, source train samples {C.source_train_samples(data)}, "
              f"batch {params['trainer']['batch_size']}, epochs {params['pretrain']['epochs']} "
              f"(auto: at least {params['pretrain']['auto']['min_epochs']}), "
              f"{args.repeats} repetitions, order {' '.join(kinds)} repeated", flush=True)
        results = C.interleaved_workloads(kinds, args.repeats, base, data, params, threads)
        steps_per_epoch = -(-C.source_train_samples(data) // params["trainer"]["batch_size"])
    report(results, steps_per_epoch)


def report(results: dict[str, list[dict]], steps_per_epoch: int) -> None:
    rows = []
    for kind, runs in results.items():
        per_epoch = [r["per_epoch_s"] for r in runs]
        steps_only = [C.median(r["steps_time_s"]) for r in runs if "steps_time_s" in r]
        extra = ""
        if kind == "trainlab":
            extra = f"open run {C.median([r['tracking_setup_s'] for r in runs]):.2f} s"
        rows.append([kind, f"{C.median(per_epoch):.3f}", C.spread(per_epoch),
                     f"{C.median(steps_only):.3f}" if steps_only else "-",
                     f"{C.median([r['process_s'] for r in runs]):.1f}",
                     f"{C.median([r['val_acc'] for r in runs]):.4f}", extra])
    print()
    print(C.table(rows, ["way", "s/epoch (median)", "min..max", "steps only s/epoch", "process s", "val/acc",
                         "not in s/epoch"]))
    base = C.median([r["per_epoch_s"] for r in results["trainlab"]])
    for other in [k for k in results if k != "trainlab"]:
        extra_ms = 1000 * (base - C.median([r["per_epoch_s"] for r in results[other]])) / steps_per_epoch
        print(f"trainlab - {other}: {extra_ms:+.3f} ms per optimizer step ({steps_per_epoch} steps/epoch, "
              f"validation and hooks included)")
    # Split trainlab's extra time into the optimizer steps and the epoch end (validation, hooks).
    steps = {k: C.median([C.median(r["steps_time_s"]) for r in results[k]]) for k in ("trainlab", "handwritten")}
    ends = {k: C.median([r["per_epoch_s"] - C.median(r["steps_time_s"]) for r in results[k]])
            for k in ("trainlab", "handwritten")}
    print(f"optimizer steps only: trainlab/handwritten {steps['trainlab'] / steps['handwritten']:.3f} "
          f"({1000 * (steps['trainlab'] - steps['handwritten']) / steps_per_epoch:+.3f} ms per step); "
          f"the rest of an epoch (validation, epoch-end hooks, fit start amortised): trainlab "
          f"{ends['trainlab']:.3f} s, handwritten {ends['handwritten']:.3f} s")
    fastest = {k: min(r["per_epoch_s"] for r in runs) for k, runs in results.items()}
    print("fastest repetition of each (the least disturbed by other load): "
          + ", ".join(f"trainlab/{k} {fastest['trainlab'] / fastest[k]:.3f}" for k in results if k != "trainlab"))
    print()
    C.print_ratio("trainlab/handwritten", base / C.median([r["per_epoch_s"] for r in results["handwritten"]]))
    if "lightning" in results:
        C.print_ratio("trainlab/lightning", base / C.median([r["per_epoch_s"] for r in results["lightning"]]))


if __name__ == "__main__":
    main()
