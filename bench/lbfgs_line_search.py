"""L-BFGS with and without torch's strong-Wolfe line search, across lrs, seeds and instruction sets.

trainlab's `fit()` trains a tiny model (the engine tests' kind: an MLP of width 8, or a
cnn1d) on noisy sine waves whose frequency is the class (3 classes, 256 train / 128 val
samples, batches of 32, 4 epochs: 32 L-BFGS steps of `max_iter` inner iterations each;
noise 0.5 is tests/test_engine.py's task, 2.0 one the model cannot fit to zero loss),
once per (arm, lr, seed). The arms:

    none                     a fixed step of lr (what trainlab shipped before issue 31)
    strong_wolfe             torch's strong-Wolfe line search (what it ships now)
    strong_wolfe_same_masks  the same, every closure evaluation of a step reseeded so that
                             dropout draws the same masks (tried, not shipped; use --dropout)

`torch.optim.LBFGS` is swapped for a subclass that sets `line_search_fn` (and reseeds), so
the rest of the loop is trainlab's own. Each instruction set runs in its own process,
because torch, MKL, oneDNN and numpy choose their kernels once, at start (the variables
are tests/helpers/emulated_isa.py's, as `make test-emulated` sets them):

    native   the CPU's own kernels
    avx2     ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
    sse42    ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2 ONEDNN_MAX_CPU_ISA=SSE41
             (each with numpy's SIMD loops above the level switched off)

Per cell: the final epoch's train loss, or `div@S` when the divergence check stopped the
run at step S. Per setting: the runs that diverged; the finished runs' worst peak (highest
step loss over the first step's: far above 1, a run left its basin on the way and came
back, the edge that the last bits decide); medians of the final train loss, val accuracy
and seconds per fit. Last, the totals per instruction set and arm.

    .venv/bin/python bench/lbfgs_line_search.py
    .venv/bin/python bench/lbfgs_line_search.py --isas native sse42 --seeds 0 1 2 --lrs 0.5 1.0
    .venv/bin/python bench/lbfgs_line_search.py --isas native --dropout 0.1 --width 16 --depth 2 \\
        --max-iter 5 --lrs 0.5 1.0 --arms strong_wolfe strong_wolfe_same_masks
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARMS = {"none": (None, False), "strong_wolfe": ("strong_wolfe", False),
        "strong_wolfe_same_masks": ("strong_wolfe", True)}   # arm: (line_search_fn, same dropout masks)
ISAS = ("native", "avx2", "sse42")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isas", nargs="+", default=list(ISAS), choices=ISAS)
    parser.add_argument("--arms", nargs="+", default=["none", "strong_wolfe"], choices=list(ARMS))
    parser.add_argument("--lrs", nargs="+", type=float, default=[0.1, 0.25, 0.5, 1.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--max-iter", nargs="+", type=int, default=[4, 5], help="L-BFGS inner iterations per step")
    parser.add_argument("--archs", nargs="+", default=["mlp", "cnn1d"], choices=["mlp", "cnn1d"])
    parser.add_argument("--noise", nargs="+", type=float, default=[0.5, 2.0],
                        help="noise on the signals: 0.5 is the engine tests' task, 2.0 a hard one")
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def isa_env(isa: str) -> dict[str, str]:
    if isa == "native":
        return {}
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers.emulated_isa import environment

    return environment(isa)


def signal_data(n: int, seed: int, noise: float):
    """n noisy sine waves whose frequency (1, 2 or 3 periods) is the class."""
    import numpy as np
    from trainlab.engine import TrainData

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    t = np.linspace(0.0, 1.0, 32)
    x = np.sin(2 * np.pi * (y[:, None] + 1) * t[None, :]) + noise * rng.standard_normal((n, 32))
    return TrainData(x.astype(np.float32), y.astype(np.int64))


def one_fit(args: argparse.Namespace, arch: str, arm: str, lr: float, max_iter: int, seed: int, noise: float,
            epochs: int | None = None) -> dict:
    """One fit() with L-BFGS; the arm is set by swapping torch.optim.LBFGS."""
    import torch
    from trainlab.config.schema import ModelConfig, TrainerConfig, TrainSpec
    from trainlab.engine import Hook, fit
    from trainlab.errors import TrainingDiverged
    from trainlab.models import build_model

    real = torch.optim.LBFGS
    line_search, same_masks = ARMS[arm]

    class LBFGS(real):   # the engine builds torch.optim.LBFGS(...) at call time
        def __init__(self, params, **kwargs):
            super().__init__(params, **{**kwargs, "line_search_fn": line_search})

        def step(self, closure):
            if not same_masks:
                return super().step(closure)
            seed = torch.default_generator.initial_seed()   # train_step's per-step seed

            def again():
                torch.default_generator.manual_seed(seed)
                return closure()
            return super().step(again)

    class StepLosses(Hook):
        def __init__(self) -> None:
            self.losses: list[float] = []

        def on_metrics(self, state, rows) -> None:
            self.losses += [value for name, value, _ in rows if name == "train/loss"]

    torch.manual_seed(seed)
    model = build_model(ModelConfig.model_validate({"arch": arch, "width": args.width, "depth": args.depth,
                                                    "kernel_size": 3, "dropout": args.dropout,
                                                    "batchnorm": False}), (32,), 3)
    spec = TrainSpec.model_validate({
        "epochs": epochs or args.epochs, "batch_size": None,
        "optimizer": {"name": "lbfgs", "lr": lr, "max_iter": max_iter},
        "schedule": {"name": "constant", "warmup_epochs": 0}, "early_stopping": {"enabled": False}})
    trainer = TrainerConfig.model_validate({"batch_size": 32, "threads": 1, "progress": "off",
                                            "clip_grad_norm": None})
    steps = StepLosses()
    torch.optim.LBFGS = LBFGS
    start = time.perf_counter()
    try:
        result = fit(model, signal_data(256, seed, noise), signal_data(128, 100 + seed, noise), spec, trainer,
                     seed=seed, hooks=[steps])
    except TrainingDiverged as err:
        step = str(err).split(" at step ", 1)[1].split()[0] if " at step " in str(err) else "?"
        return {"diverged": step, "s": time.perf_counter() - start}
    finally:
        torch.optim.LBFGS = real
    last = result.history[-1]
    peak = max(steps.losses) / steps.losses[0]
    return {"loss": last["epoch/train_loss"], "acc": last["val/acc"], "peak": peak, "s": time.perf_counter() - start}


def child(args: argparse.Namespace) -> None:
    import torch

    one_fit(args, args.archs[0], args.arms[0], args.lrs[0], args.max_iter[0], 0, 0.5, epochs=1)   # warm-up
    rows = [{"arch": arch, "noise": noise, "arm": arm, "lr": lr, "max_iter": it, "seed": seed,
             **one_fit(args, arch, arm, lr, it, seed, noise)}
            for arch in args.archs for noise in args.noise for it in args.max_iter for lr in args.lrs
            for seed in args.seeds for arm in args.arms]
    C.emit_result({"capability": torch.backends.cpu.get_cpu_capability(), "rows": rows})


def cell(row: dict) -> str:
    return f"div@{row['diverged']}" if "diverged" in row else f"{row['loss']:.3g}"


def main() -> None:
    args = parse_args()
    if args.child:
        child(args)
        return
    C.print_header("L-BFGS: " + " vs ".join(args.arms), sys.argv, threads=1)
    print(f"# model: width {args.width}, depth {args.depth}, dropout {args.dropout}; {args.epochs} epochs")
    forwarded = [a for a in sys.argv[1:] if a != "--child"]
    summary, totals = [], []
    for isa in args.isas:
        proc = subprocess.run([C.PYTHON, __file__, "--child", *forwarded], env={**os.environ, **isa_env(isa)},
                              capture_output=True, text=True, timeout=3600)
        if proc.returncode:
            sys.exit(f"{isa}: child failed\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.splitlines()[-1].removeprefix(C.RESULT_TAG))
        print(f"\n## {isa} (ATen capability {result['capability']}): final train loss per seed {args.seeds}")
        table = []
        for key in [(a, n, it, lr) for a in args.archs for n in args.noise for it in args.max_iter for lr in args.lrs]:
            runs = {arm: [r for r in result["rows"] if (r["arch"], r["noise"], r["max_iter"], r["lr"], r["arm"])
                          == (*key, arm)] for arm in args.arms}
            table.append([*key, *(" ".join(cell(r) for r in runs[arm]) for arm in args.arms)])
            for arm, rs in runs.items():
                done = [r for r in rs if "loss" in r]
                summary.append([isa, *key, arm, f"{len(rs) - len(done)}/{len(rs)}",
                                f"{max(r['peak'] for r in done):.3g}" if done else "-",
                                f"{statistics.median(r['loss'] for r in done):.3g}" if done else "-",
                                f"{statistics.median(r['acc'] for r in done):.3f}" if done else "-",
                                f"{statistics.median(r['s'] for r in rs):.2f}"])
        print(C.table(table, ["arch", "noise", "max_iter", "lr", *args.arms]))
        for arm in args.arms:
            rs = [r for r in result["rows"] if r["arm"] == arm]
            done = [r for r in rs if "loss" in r]
            totals.append([isa, arm, f"{len(rs) - len(done)}/{len(rs)}",
                           f"{sum(r['peak'] > 10 for r in done)}/{len(done)}",
                           f"{max(r['peak'] for r in done):.3g}" if done else "-",
                           f"{statistics.median(r['acc'] for r in done):.3f}" if done else "-",
                           f"{statistics.mean(r['s'] for r in rs):.3f}"])
    print("\n## per setting: runs diverged; the finished runs' worst peak (highest step loss / first step"
          " loss); medians over the finished runs")
    print(C.table(summary, ["isa", "arch", "noise", "max_iter", "lr", "arm", "diverged", "worst peak",
                            "final train loss", "val acc", "s per fit"]))
    print("\n## totals: runs diverged; finished runs with a peak over 10; the highest peak; median val acc"
          " of the finished runs; mean seconds per fit")
    print(C.table(totals, ["isa", "arm", "diverged", "peak > 10", "highest peak", "val acc", "s per fit"]))


if __name__ == "__main__":
    main()
