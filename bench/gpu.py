"""fp32 vs bf16 vs fp16 (and torch.compile) on one CUDA GPU: samples/s, peak memory, accuracy.

Two models big enough to load a GPU, built by trainlab's own `build_model`: a wide, deep
resnet1d on 1-D signals and a resnet2d on 32x32 images, trained by trainlab's `fit()` with
large batches on synthetic 10-class tasks (made here, seeded: nothing is downloaded). Each
precision trains the same model from the same initialisation for the same number of steps,
so the accuracies compare at an equal budget.

Throughput is training samples per second of the optimizer steps (validation excluded),
the median over epochs after the first (the first holds cuDNN and compile warm-up). Peak
memory is torch.cuda.max_memory_allocated over the run. The engine runs CUDA with
deterministic algorithms and cudnn.benchmark off, as every trainlab run does; cuDNN may use
TF32 for fp32 convolutions (torch's default, printed in the header).

Needs only torch, numpy and pydantic besides trainlab's src/ (no MLflow, DVC, Optuna, PyYAML):
on a GPU node without the project installed, `PYTHONPATH=src` is enough (scripts/gpu_check.sh).
Without CUDA it prints one line and exits 0.

    python bench/gpu.py                          # both models, fp32 bf16 fp16 bf16+compile
    python bench/gpu.py --quick                  # a smoke run: small data, 2 epochs
    python bench/gpu.py --models resnet1d --runs fp32 bf16 --out gpu.txt
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from trainlab.config.schema import ModelConfig, TrainerConfig, TrainSpec
from trainlab.engine import TrainData, fit
from trainlab.models import build_model

CLASSES = 10
ACCURACY_POINTS = 0.3   # "equal accuracy" (issue 16)
# name: (arch, input shape, width, depth, kernel)
MODELS = {"resnet1d": ("resnet1d", (1024,), 128, 8, 9), "resnet2d": ("resnet2d", (32, 32), 128, 6, 3)}
RUNS = {"fp32": ("fp32", False), "bf16": ("bf16", False), "fp16": ("fp16", False),
        "bf16+compile": ("bf16", True)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS),
                        help="fp32 always runs: it is the reference")
    parser.add_argument("--train-samples", type=int, default=49_152)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--quick", action="store_true", help="8,192 samples, 2 epochs: checks that it runs")
    parser.add_argument("--out", type=Path, help="also write the table (and header) to this file")
    return parser.parse_args()


def synthetic(arch: str, shape: tuple[int, ...], n: int, seed: int) -> TrainData:
    """Noisy 10-class signals: two class-specific frequencies (1-D) or an oriented grating (2-D)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    if arch.endswith("1d"):
        t = np.linspace(0.0, 1.0, shape[0])[None, :]
        x = np.sin(2 * np.pi * (4 + 3 * y[:, None]) * t + phase) + 0.5 * np.sin(2 * np.pi * (40 - 2 * y[:, None]) * t)
    else:
        h, w = shape
        u, v = np.meshgrid(np.linspace(0, 1, w), np.linspace(0, 1, h))
        angle = (np.pi * y / CLASSES + rng.normal(0, 0.05, n))[:, None, None]
        x = np.sin(2 * np.pi * 6 * (np.cos(angle) * u + np.sin(angle) * v) + phase[:, :, None])
    x = x + 1.5 * rng.standard_normal(x.shape)
    return TrainData(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64)))


def train_once(name: str, run: str, train: TrainData, val: TrainData, args: argparse.Namespace) -> dict:
    arch, shape, width, depth, kernel = MODELS[name]
    precision, compiled = RUNS[run]
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, width=width, depth=depth, kernel_size=kernel, dropout=0.0),
                        shape, CLASSES)
    trainer = TrainerConfig(accelerator="cuda", precision=precision, compile=compiled,
                            batch_size=args.batch_size, progress="off", log_every_steps=50)
    spec = TrainSpec.model_validate({"epochs": args.epochs, "batch_size": None,
                                     "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.01},
                                     "schedule": {"name": "cosine", "warmup_epochs": 1},
                                     "early_stopping": {"enabled": False}})
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    result = fit(model, train, val, spec, trainer, seed=0)
    wall = time.perf_counter() - started
    speeds = [row["epoch/samples_per_s"] for row in result.history]
    return {"samples_per_s": statistics.median(speeds[1:] or speeds),
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30, "val_acc": result.history[-1]["val/acc"],
            "wall_s": wall, "params": sum(p.numel() for p in model.parameters())}


def verdict(name: str, results: dict[str, dict]) -> tuple[str, str]:
    """Issue 16's bar: a mixed precision at >= 2x fp32's samples/s within 0.3 point of its accuracy."""
    ref = results["fp32"]
    equal = {run: r for run, r in results.items()
             if run != "fp32" and abs(r["val_acc"] - ref["val_acc"]) <= ACCURACY_POINTS / 100}
    if not equal:
        return f"{name}: no mixed-precision run within {ACCURACY_POINTS} point of fp32's accuracy", \
            f"ratio {name} fastest_equal_accuracy/fp32 samples_per_s = nan"
    best = max(equal, key=lambda run: equal[run]["samples_per_s"])
    ratio = equal[best]["samples_per_s"] / ref["samples_per_s"]
    return (f"{name}: fastest within {ACCURACY_POINTS} point of fp32: {best}, {ratio:.2f}x fp32 "
            f"({'meets' if ratio >= 2 else 'misses'} the 2x bar)",
            f"ratio {name} {best}/fp32 samples_per_s = {ratio:.2f}")


def header(args: argparse.Namespace) -> list[str]:
    gpu = torch.cuda.get_device_properties(0)
    return [f"# bench/gpu.py {' '.join(sys.argv[1:])}".rstrip(),
            f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
            f"{gpu.name} ({gpu.total_memory / 2**30:.0f} GiB), torch {torch.__version__}, CUDA {torch.version.cuda}, "
            f"cuDNN {torch.backends.cudnn.version()}, cudnn TF32 {torch.backends.cudnn.allow_tf32}, "
            f"matmul TF32 {torch.backends.cuda.matmul.allow_tf32}",
            f"# {args.train_samples} train samples, {args.epochs} epochs, batch {args.batch_size}, AdamW, "
            f"bf16 supported: {torch.cuda.is_bf16_supported()}"]


def main() -> int:
    if not torch.cuda.is_available():
        print("bench/gpu.py: skipped, no CUDA device (it measures GPUs only)")
        return 0
    args = parse_args()
    if args.quick:
        args.train_samples, args.epochs = 8192, 2
    runs = [r for r in RUNS if r in args.runs or r == "fp32"]
    lines = header(args)
    print("\n".join(lines), flush=True)
    rows, accuracies, verdicts = [], [], []
    for name in args.models:
        arch, shape = MODELS[name][:2]
        train = synthetic(arch, shape, args.train_samples, seed=1)
        val = synthetic(arch, shape, max(args.train_samples // 8, 1024), seed=2)
        results = {}
        for run in runs:
            results[run] = got = train_once(name, run, train, val, args)
            accuracies.append(got["val_acc"])
            ref = results["fp32"]
            rows.append(f"| {name} ({got['params'] / 1e6:.1f} M params) | {run} | {got['samples_per_s']:,.0f} "
                        f"| {got['samples_per_s'] / ref['samples_per_s']:.2f} | {got['peak_gib']:.2f} "
                        f"| {got['val_acc']:.4f} | {100 * (got['val_acc'] - ref['val_acc']):+.2f} "
                        f"| {got['wall_s']:.0f} |")
            print(rows[-1], flush=True)   # a run cut short by a timeout keeps the rows so far
        verdicts.append(verdict(name, results))
    table = ["| model | run | samples/s | vs fp32 | peak GiB | val/acc | points vs fp32 | wall s |",
             "|---|---|---|---|---|---|---|---|", *rows]
    print("\n" + "\n".join(table))
    print()
    for line, _ in verdicts:
        print(line)
    if args.out:
        args.out.write_text("\n".join([*lines, "", *table, "", *(line for line, _ in verdicts)]) + "\n")
    for _, ratio in verdicts:   # the bench/ convention: ratios last
        print(ratio)
    return 0 if all(math.isfinite(acc) for acc in accuracies) else 1


if __name__ == "__main__":
    sys.exit(main())
