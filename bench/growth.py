"""Does training throughput stay flat as the data grows? In memory and through the DataLoader.

`trainlab.engine.fit` trains the default model (params.yaml's model, pretrain optimizer
and batch) on synthetic MNIST-1D-shaped samples (length 40, 10 classes) as the training
set grows 1x, 10x, 100x (2k, 20k, 200k samples), three ways:
  memory         trainer.loader: memory (tensors in RAM, batches are index lookups)
  dataloader-w0  trainer.loader: dataloader over .npy files opened with mmap_mode='r',
                 num_workers 0
  dataloader-w2  the same with num_workers 2
Throughput is fit()'s own epoch/samples_per_s (optimizer steps only, validation
excluded), the median over epochs; small sets train several epochs so every figure
covers about 20k samples. One warm-up fit runs first so one-time initialisation is not
charged to the smallest size, and the sizes and paths are visited in rounds (median
over rounds) so a change in the machine's load hits every size alike. A straight-line fit of seconds per epoch against samples,
t = fixed + n x per_sample, separates the per-epoch fixed cost from the per-sample cost.

    .venv/bin/python bench/growth.py
    .venv/bin/python bench/growth.py --sizes 2000 20000 200000
    .venv/bin/python bench/growth.py --quick
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

LENGTH, CLASSES, VAL_SAMPLES = 40, 10, 1000
PATHS = {"memory": ("memory", 0), "dataloader-w0": ("dataloader", 0), "dataloader-w2": ("dataloader", 2)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes 256 and 2560, 1 thread")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000, 200000])
    parser.add_argument("--samples-per-figure", type=int, default=20000,
                        help="small sets train ceil(this / size) epochs")
    parser.add_argument("--threads", type=int, default=None, help="default: params.yaml's trainer.threads")
    parser.add_argument("--rounds", type=int, default=3,
                        help="passes over every size and path, interleaved; medians over rounds")
    return parser.parse_args()


def synthetic(directory: Path, n: int, seed: int):
    """x ~ N(0, 1) of shape (n, 40), y uniform over 10 classes, saved as .npy."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, LENGTH), dtype=np.float32)
    y = rng.integers(0, CLASSES, n, dtype=np.int64)
    np.save(directory / f"x_{n}.npy", x)
    np.save(directory / f"y_{n}.npy", y)
    return x, y


def main() -> None:
    import math

    import numpy as np
    import torch

    from trainlab.config import validate
    from trainlab.engine import TrainData, fit
    from trainlab.models import build_model

    args = parse_args()
    overrides = {"trainer.progress": "off"}
    if args.quick:
        args.sizes, args.samples_per_figure, args.rounds = [256, 2560], 2560, 1
        overrides["trainer.threads"] = 1
    if args.threads:
        overrides["trainer.threads"] = args.threads
    base = C.real_params(**overrides)
    threads = base["trainer"]["threads"]
    C.print_header("growth: fit() samples/s as the training set grows", ["bench/growth.py", *sys.argv[1:]], threads)
    torch.set_num_threads(threads)

    def params_for(path: str, epochs: int):
        loader, workers = PATHS[path]
        return validate(C.real_params(**overrides, **{"trainer.loader": loader, "trainer.num_workers": workers,
                                                      "pretrain.epochs": epochs}))

    def train(x, y, vx, vy, path: str, epochs: int) -> list[float]:
        params = params_for(path, epochs)
        torch.manual_seed(params.seed)
        model = build_model(params.model, (LENGTH,), CLASSES)
        result = fit(model, TrainData(x, y), TrainData(vx, vy), params.pretrain, params.trainer, seed=params.seed)
        return [h["epoch/samples_per_s"] for h in result.history]

    samples: dict[str, dict[int, list[float]]] = {p: {n: [] for n in args.sizes} for p in PATHS}
    with C.workspace("growth") as tmp:
        directory = Path(tmp)
        vx, vy = synthetic(directory, VAL_SAMPLES, seed=1)
        train(vx, vy, vx, vy, "memory", 1)   # warm-up: thread pools, allocator, lazy imports
        data = {n: synthetic(directory, n, seed=n) for n in args.sizes}
        print(f"# model {base['model']['arch']} width {base['model']['width']} depth {base['model']['depth']}, "
              f"batch {base['trainer']['batch_size']}, sizes {args.sizes}, {args.rounds} round(s) over every "
              f"size and path", flush=True)
        for round_ in range(args.rounds):
            for n in args.sizes:
                mapped = (np.load(directory / f"x_{n}.npy", mmap_mode="r"),
                          np.load(directory / f"y_{n}.npy", mmap_mode="r"))
                epochs = max(1, math.ceil(args.samples_per_figure / n))
                for path in PATHS:
                    tx, ty = data[n] if path == "memory" else mapped
                    rate = C.median(train(tx, ty, vx, vy, path, epochs))
                    samples[path][n].append(rate)
                    print(f"round {round_ + 1} {n:>7d} samples {path:14s} {rate:8.0f} samples/s "
                          f"({epochs} epoch(s)), load {C.load_average()}", flush=True)
                del mapped
    rates = {p: {n: C.median(samples[p][n]) for n in args.sizes} for p in PATHS}
    smallest, largest = min(args.sizes), max(args.sizes)
    rows = []
    for path in PATHS:
        sizes = sorted(rates[path])
        seconds = [n / rates[path][n] for n in sizes]
        per_sample, fixed = np.polyfit(sizes, seconds, 1)
        rows.append([path, *[f"{rates[path][n]:.0f}" for n in sizes],
                     f"{rates[path][smallest] / rates[path][largest]:.3f}",
                     f"{fixed:.3f}", f"{1e6 * per_sample:.1f}"])
    print()
    print(C.table(rows, ["path", *[f"{n} samples/s" for n in sorted(args.sizes)],
                         f"cost/sample {largest // smallest}x vs 1x", "fixed s/epoch (fit)", "us/sample (fit)"]))
    print()
    for path in ("dataloader-w2", "dataloader-w0", "memory"):
        C.print_ratio(f"cost_per_sample largest/smallest ({path})", rates[path][smallest] / rates[path][largest])


if __name__ == "__main__":
    main()
