"""Grid search vs random search at the same trial budget (Bergstra & Bengio, JMLR 2012).

The objective is a synthetic "validation loss" over four real search keys of
params.yaml. Only one of them matters much: the loss is the squared distance of
log10(finetune.optimizer.lr) from an optimum drawn at random for each repetition; the
other three (model.dropout, finetune.backbone_lr_scale, finetune.optimizer.weight_decay)
add effects a hundred times smaller. That is the typical shape of a real
hyperparameter response: low effective dimensionality.

Both searches run through trainlab's own study machinery (`queue_grid`, and
`run_trials`: slots, per-slot seeded proposals, ask/tell) in an in-memory Optuna study, with Params built by
`with_overrides`; only the objective is synthetic, so a run takes seconds.

Why grid loses: a grid of k points per axis over d axes spends k**d trials but tries
only k distinct values of each axis, the important one included: with k = 3 and d = 4,
81 trials test 3 learning rates, each 27 times over with different values of settings
that barely matter. Random search spends the same 81 trials on 81 distinct learning
rates (and 81 of every other axis), so its best lr lands much closer to the optimum.
The grid also only ever sees its fixed points, so an optimum between them is out of
its reach however the seed is chosen.

    python bench/grid_vs_random.py [--repetitions 10] [--grid-points 3]

prints each repetition's best value (regret: 0 is the optimum) for grid and random,
their medians, and last the ratio of grid's median to random's.
"""

from __future__ import annotations

import argparse
import math
import statistics
from typing import Any

import numpy as np
import optuna

from trainlab.config import Params, with_overrides
from trainlab.search.loop import run_trials
from trainlab.search.space import suggest
from trainlab.search.study import ProposalSampler, queue_grid

IMPORTANT = "finetune.optimizer.lr"
LR_RANGE = (1.0e-4, 1.0e-1)
SPACE: dict[str, dict[str, Any]] = {
    IMPORTANT: {"type": "float", "low": LR_RANGE[0], "high": LR_RANGE[1], "log": True},
    "model.dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "finetune.backbone_lr_scale": {"type": "float", "low": 0.05, "high": 1.0, "log": True},
    "finetune.optimizer.weight_decay": {"type": "float", "low": 0.0, "high": 0.1},
}
# Optimum of each unimportant key, and how much a full-range miss of it costs.
MINOR = {"model.dropout": (0.2, 0.5), "finetune.backbone_lr_scale": (0.3, 1.0),
         "finetune.optimizer.weight_decay": (0.03, 0.1)}
MINOR_WEIGHT = 0.01


def objective_for(best_lr: float):
    """The synthetic loss of one problem instance; its minimum (0) is at best_lr."""
    def loss(values: dict[str, float]) -> float:
        total = (math.log10(values[IMPORTANT]) - math.log10(best_lr)) ** 2
        for key, (best, span) in MINOR.items():
            total += MINOR_WEIGHT * ((values[key] - best) / span) ** 2
        return total
    return loss


def search_params(sampler: str, grid_points: int, seed: int) -> Params:
    """trainlab's own search config: the space above, a budget of the full grid's size."""
    return with_overrides(Params(), {"search.space": SPACE, "search.sampler": sampler, "search.seed": seed,
                                     "search.grid_points": grid_points,
                                     "search.n_trials": grid_points ** len(SPACE)})


def best_value(sampler: str, grid_points: int, seed: int, best_lr: float) -> float:
    """Run one in-memory study with trainlab's sampler; the best (lowest) loss it found."""
    params = search_params(sampler, grid_points, seed)
    loss = objective_for(best_lr)
    study = optuna.create_study(direction="minimize", sampler=ProposalSampler())
    if sampler == "grid":
        queue_grid(study, params)
    run_trials(study, params, lambda trial, slot: loss(suggest(trial, params.search.space)))
    return study.best_value


def compare(repetitions: int, grid_points: int) -> list[tuple[float, float, float]]:
    """(optimal lr, grid's best, random's best) for each repetition; instance and seed vary."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = np.random.default_rng(2012)
    rows = []
    for rep in range(repetitions):
        best_lr = float(10 ** rng.uniform(math.log10(LR_RANGE[0]), math.log10(LR_RANGE[1])))
        rows.append((best_lr, best_value("grid", grid_points, rep, best_lr),
                     best_value("random", grid_points, rep, best_lr)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repetitions", type=int, default=10)
    parser.add_argument("--grid-points", type=int, default=3)
    args = parser.parse_args()
    rows = compare(args.repetitions, args.grid_points)
    budget = args.grid_points ** len(SPACE)
    print(f"{budget} trials per search, {args.repetitions} repetitions; best value found (0 = optimum)")
    print(f"{'rep':>3} {'optimal lr':>11} {'grid':>10} {'random':>10}")
    for rep, (best_lr, grid_best, random_best) in enumerate(rows):
        print(f"{rep:>3} {best_lr:>11.3g} {grid_best:>10.4g} {random_best:>10.4g}")
    grid_median = statistics.median(r[1] for r in rows)
    random_median = statistics.median(r[2] for r in rows)
    print(f"median {'':>11} {grid_median:>10.4g} {random_median:>10.4g}")
    print(f"ratio grid/random median best: {grid_median / random_median:.1f}")


if __name__ == "__main__":
    main()
