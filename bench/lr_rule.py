"""Which rule should `optimizer.lr: auto` read off a range test? (issue 32, item 1)

On 7 small tasks (tests/helpers/engine.py's noisy sine waves, 400 train / 400 validation
samples, 3 classes; MLP, CNN and ResNet of width 16 or 32; SGD with momentum 0.9, Adam,
AdamW; 15 epochs at batch 32 with warmup and cosine, gradient clipping at 1) this trains a
grid of 7 fixed rates a factor of 3 apart, 3 seeds each, and takes as the best rate the one
with the lowest median (over seeds) of the best validation loss. Then it runs the range
test (engine/lr_range.py) at 100, 150 and 300 steps, 3 seeds each, and reads several rules
off each curve:

    knee/10   a tenth of the first rate where the smoothed loss is within 10% of its fall
              to the minimum (what `auto` used until section 19's second run)
    knee*S/1000  the knee (interpolated between steps) times the test's length S over 1,000
              (knee/10 at 100 steps, knee/3.3 at 300; what `auto` chooses, read from the
              test itself): the rate a test reaches before the loss has fallen
              scales as 1/S, since the summed rate up to rate r of an exponential ramp is
              r * S / ln(range)
    knee/3    the same, a third
    min/10    a tenth of the rate at the smoothed loss's minimum (fastai's first rule)
    steepest  the steepest descent of the smoothed loss (Lightning's suggestion)
    half      the rate where the smoothed loss has fallen half way

It prints, per task and test, each rule's distance to the best grid rate in grid steps
(log base 3), and per test length and rule how many land within one step, the mean and the
worst distance. A test whose loss fell too little to read (auto's noise criterion) counts
as a miss for every rule.

    .venv/bin/python bench/lr_rule.py            # 7 tasks (a few minutes on 2 cores)
    .venv/bin/python bench/lr_rule.py --quick    # one task, one test length
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests")]
import _common as C  # noqa: E402
from helpers.engine import signal_data, tiny_model, train_spec, trainer_cfg  # noqa: E402

from trainlab.engine import fit  # noqa: E402
from trainlab.engine import lr_range  # noqa: E402
from trainlab.engine.lr_range import KNEE, lr_range_test  # noqa: E402
from trainlab.errors import TrainingDiverged  # noqa: E402

# (model, optimizer, lowest grid rate, input noise, width)
TASKS = [("mlp", "adamw", 1e-4, 1.0, 16), ("mlp", "sgd", 1e-3, 1.0, 16), ("cnn1d", "adamw", 1e-4, 1.0, 16),
         ("resnet1d", "adamw", 1e-4, 1.0, 16), ("cnn1d", "sgd", 1e-3, 0.5, 16), ("mlp", "adam", 1e-4, 0.5, 32),
         ("resnet1d", "sgd", 1e-3, 0.5, 16)]
LENGTHS = (100, 150, 300)
RULES = ("knee/10", "knee*S/1000", "knee/3", "min/10", "steepest", "half")


def spec(optimizer: str, lr):
    extra = {"momentum": 0.9} if optimizer == "sgd" else {}
    return train_spec(15, optimizer={"name": optimizer, "lr": lr, **extra},
                      schedule={"name": "cosine", "warmup_epochs": 1})


def best_grid_rate(arch: str, optimizer: str, low: float, noise: float, width: int) -> float:
    train, val = signal_data(400, 0, noise=noise), signal_data(400, 1, noise=noise)
    medians = {}
    for rate in (low * 3 ** k for k in range(7)):
        losses = []
        for seed in range(3):
            try:
                result = fit(tiny_model(arch, seed=seed, width=width), train, val, spec(optimizer, rate),
                             trainer_cfg(clip_grad_norm=1.0), seed=seed)
                losses.append(min(row["val/loss"] for row in result.history))
            except TrainingDiverged:
                losses.append(math.inf)
        medians[rate] = statistics.median(losses)
    return min(medians, key=medians.get)


def rules(test) -> dict[str, float]:
    """Each rule's rate read off one range test (none where the loss fell too little to read)."""
    if test.chosen is None:
        return {}
    lrs, smooth = np.asarray(test.lrs), np.where(np.isfinite(test.smoothed), test.smoothed, np.inf)
    skip = max(1, len(smooth) // 10)
    low = int(np.argmin(smooth))
    start = float(np.median(smooth[:skip + 1]))
    fall = start - smooth[low]
    knee = lrs[int(np.argmax(smooth <= smooth[low] + KNEE * fall))]
    half = lrs[int(np.argmax(smooth <= start - 0.5 * fall))]
    return {"knee/10": knee / 10, "knee*S/1000": test.chosen, "knee/3": knee / 3, "min/10": lrs[low] / 10, "steepest": test.steepest,
            "half": half}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one task, 100 steps only")
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)), help="test lengths in steps, comma-separated")
    parser.add_argument("--no-rerun", action="store_true",
                        help="read a faint fall as it is (no second test at lr_range.MAX_STEPS)")
    parser.add_argument("--start-lr", type=float, help="the ramp's first rate (default lr_range.START_LR)")
    args = parser.parse_args()
    if args.start_lr:
        lr_range.START_LR = args.start_lr
    lengths = tuple(int(n) for n in args.lengths.split(","))
    tasks, lengths = (TASKS[:1], lengths[:1]) if args.quick else (TASKS, lengths)
    C.print_header("lr range test: which rule lands nearest the best rate of a grid", ["bench/lr_rule.py", *sys.argv[1:]])
    distances: dict[tuple[int, str], list[float]] = {}
    costs: dict[int, list[int]] = {}
    for arch, optimizer, low, noise, width in tasks:
        best = best_grid_rate(arch, optimizer, low, noise, width)
        print(f"{arch} {optimizer} noise {noise} width {width}: best grid rate {best:.2e}", flush=True)
        train = signal_data(400, 0, noise=noise)
        for steps in lengths:
            for seed in range(3):
                if args.no_rerun:
                    lr_range.MAX_STEPS = steps
                test = lr_range_test(tiny_model(arch, seed=seed, width=width), train, spec(optimizer, "auto"),
                                     trainer_cfg(clip_grad_norm=1.0), seed=seed, steps=steps)
                read = rules(test)
                for rule in RULES:
                    distances.setdefault((steps, rule), []).append(
                        abs(math.log(read[rule] / best, 3)) if rule in read else math.inf)
                shown = " ".join(f"{r} {math.log(v / best, 3):+.1f}" for r, v in read.items()) or "loss fell too little"
                costs.setdefault(steps, []).append(test.steps_run)
                ran = f" (read at {test.steps}, {test.steps_run} run in all)" if test.steps != steps else ""
                print(f"  {steps} steps{ran}, seed {seed}: {shown}", flush=True)
    rows = []
    for (steps, rule), found in sorted(distances.items()):
        finite = [d for d in found if math.isfinite(d)]
        rows.append([steps, rule, f"{sum(d <= 1 for d in found)}/{len(found)}",
                     f"{np.mean(finite):.2f}" if finite else "-", f"{max(found):.2f}"])
    print()
    print(C.table(rows, ["test steps", "rule", "within one grid step", "mean |steps|", "worst |steps|"]))
    for steps, ran in sorted(costs.items()):
        print(f"tests of {steps} steps: {np.mean(ran):.0f} steps run on average (retries included), most {max(ran)}")
    for rule in ("knee*S/1000", "knee/10"):
        found = [d for (steps, name), ds in distances.items() if name == rule for d in ds]
        C.print_ratio(f"{rule} within one grid step (share of tests)", sum(d <= 1 for d in found) / len(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
