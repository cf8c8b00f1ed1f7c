"""fp32 vs bf16 vs fp16 on this CPU for the default model, and what `precision: auto` picks.

The pretrain workload (params.yaml's model and source data) is trained by trainlab's
train_source, untracked, for a few epochs at each precision, each run a fresh process,
precisions interleaved per repetition. Throughput is training samples per second of
the optimizer steps (validation excluded), the median over epochs and repetitions;
accuracy is the validation accuracy after the last epoch. bf16 and fp16 use autocast
(fp16 with a GradScaler), so the weights and optimizer stay fp32.

The verdict: the fastest precision whose accuracy is within 0.5 point of fp32, and
whether `trainlab.engine.runtime.resolve_precision('auto', cpu)` chose it.

    .venv/bin/python bench/precision.py              # 3 epochs each, 1 repetition
    .venv/bin/python bench/precision.py --epochs 5 --repeats 2
    .venv/bin/python bench/precision.py --precisions fp32 bf16 --repeats 6   # no fp16: minutes
    .venv/bin/python bench/precision.py --quick
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

PRECISIONS = ("fp32", "bf16", "fp16")
TOLERANCE = 0.005   # half a point of accuracy


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny data, 1 epoch, 1 thread")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--source-samples", type=int, default=None,
                        help="cut data.source.num_samples (default: params.yaml's 40000)")
    parser.add_argument("--threads", type=int, default=None, help="default: params.yaml's trainer.threads")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS),
                        help="a subset to compare (fp32 always runs: it is the accuracy reference); "
                             "leaving out fp16 saves most of the time")
    return parser.parse_args()


def main() -> None:
    import torch

    from trainlab.engine.runtime import resolve_precision

    args = parse_args()
    precisions = [p for p in PRECISIONS if p in args.precisions or p == "fp32"]
    if args.quick:
        args.repeats = 1
    params = C.workload_params(args, **{"trainer.progress": "log"})
    threads = params["trainer"]["threads"]
    C.print_header("precision: fp32 vs bf16 vs fp16, pretrain workload", ["bench/precision.py", *sys.argv[1:]],
                   threads)
    auto = resolve_precision("auto", torch.device("cpu"))
    print(f"# cpu bf16 support: avx512_bf16 {torch.cpu._is_avx512_bf16_supported()}, "
          f"amx {torch.cpu._is_amx_tile_supported()}; fp16: amx_fp16 {torch.cpu._is_amx_fp16_supported()}")
    runs: dict[str, list[dict]] = {p: [] for p in precisions}
    with C.workspace("precision") as tmp:
        base = Path(tmp)
        shared = C.prepare_data(base / "shared", params)
        samples = C.source_train_samples(shared)
        print(f"# workload: {params['model']['arch']} width {params['model']['width']}, {samples} train samples, "
              f"{params['pretrain']['epochs']} epochs, {args.repeats} repetition(s)", flush=True)
        for rep in range(args.repeats):
            for precision in precisions:
                run_params = C.workload_params(args, **{"trainer.progress": "log", "trainer.precision": precision})
                run_dir = C.fresh_run_dir(base, f"{precision}-{rep}", shared, run_params)
                result, wall = C.run_child([str(C.BENCH / "_workloads.py"), "trainlab-untracked",
                                            "--project", str(run_dir), "--threads", str(threads)])
                assert result["precision"] == precision, result
                result["samples_per_s"] = [samples / t for t in result["steps_time_s"]]
                runs[precision].append(result)
                print(f"rep {rep + 1} {precision}: {C.median(result['samples_per_s']):.0f} samples/s, "
                      f"val/acc {result['val_acc']:.4f}, process {wall:.1f} s, load {C.load_average()}",
                      flush=True)
                shutil.rmtree(run_dir)
    speed = {p: C.median([s for r in runs[p] for s in r["samples_per_s"]]) for p in precisions}
    acc = {p: C.median([r["val_acc"] for r in runs[p]]) for p in precisions}
    every = {p: [s for r in runs[p] for s in r["samples_per_s"]] for p in precisions}
    print()
    print(C.table([[p, f"{speed[p]:.0f}", f"{min(every[p]):.0f}..{max(every[p]):.0f}", f"{speed[p] / speed['fp32']:.2f}",
                    f"{acc[p]:.4f}", f"{100 * (acc[p] - acc['fp32']):+.2f}"] for p in precisions],
                  ["precision", "samples/s", "min..max (epochs)", "vs fp32", "val/acc", "points vs fp32"]))
    accurate = [p for p in precisions if acc[p] >= acc["fp32"] - TOLERANCE]
    best = max(accurate, key=lambda p: speed[p])
    if auto == best:
        verdict = "yes"
    elif auto not in speed:
        verdict = f"not measured: {auto} was left out of --precisions"
    elif auto in accurate and max(every[auto]) >= min(every[best]):
        verdict = (f"not measurably: {best} is {speed[best] / speed[auto]:.2f}x {auto} by the medians, "
                   f"inside the epoch-to-epoch spread")
    else:
        verdict = f"no: {best} is {speed[best] / speed[auto]:.2f}x faster" + ("" if auto in accurate else
                                                                             f" and {auto} loses accuracy")
    print(f"\ntrainer.precision: auto resolves to {auto} on this CPU; fastest within 0.5 point of fp32: "
          f"{best}; auto is the fastest accurate choice: {verdict}")
    for p in precisions[1:]:
        C.print_ratio(f"{p}/fp32 samples_per_s", speed[p] / speed["fp32"])
    C.print_ratio(f"auto({auto})/fastest_accurate({best}) samples_per_s", speed.get(auto, math.nan) / speed[best])


if __name__ == "__main__":
    main()
