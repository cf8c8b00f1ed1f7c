"""`data.file.numeric_bins: auto`: whether a table's numbers also reach the model in quantile bins.

The piecewise-linear encoding over quantile bins (`tables.PiecewiseLinear`) lets an MLP put a
threshold where the training rows put one; on a near-linear target it only adds inputs to
overfit. Measured on the zoo (bench/RESULTS.md, section 12) it lifts some tables by points and
costs others as much, so no fixed setting suits every table. `auto` asks the training rows:
a linear probe (scikit-learn's logistic regression for classes, ridge regression for a number,
both at their default regularisation, as the pipeline's own models have one fixed weight
decay) is cross-validated on the training rows with and without the bins, each fold's
preprocessing fitted on its own training part, exactly as prepare fits it. The bins are
chosen only when they win clearly: their mean per-fold gain above twice its standard error.
The test rows are never read. The choice and both scores are printed in prepare's plan line.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from trainlab.data.table_plan import ColumnPlan

BINS = 8                  # what section 12 measured (4 bins did worse there)
FOLDS = 5
MIN_ROWS = 50             # fewer training rows cannot tell the encodings apart: bins stay off
MAX_ROWS = 5000           # a larger table is probed on a seeded sample of its training rows
CLEAR_WIN = 2.0           # standard errors of the per-fold gain the bins must exceed
PROBE_SEED = 0            # the folds and the sample: fixed, so prepare's output never varies


@dataclass(frozen=True)
class BinsChoice:
    bins: int
    note: str             # one clause for the plan line; "" where nothing was probed


def choose_numeric_bins(train_rows: pd.DataFrame, targets: np.ndarray, task: str, plan: ColumnPlan) -> BinsChoice:
    """8 when the probe's cross-validated score clearly gains from the bins, else 0 (docstring above)."""
    if not plan.numeric and not plan.dates:
        return BinsChoice(0, "")
    if len(train_rows) < MIN_ROWS:
        return BinsChoice(0, f"numeric_bins auto: off ({len(train_rows)} training rows, under {MIN_ROWS})")
    rows, targets = _sample(train_rows.reset_index(drop=True), np.asarray(targets))
    folds = _folds(targets, task)
    if folds is None:
        return BinsChoice(0, "numeric_bins auto: off (a class too rare to cross-validate)")
    plain, binned = (np.array([_fold_score(rows, targets, train, held, task, plan, bins) for train, held in folds])
                     for bins in (0, BINS))
    gain = binned - plain
    stderr = gain.std(ddof=1) / np.sqrt(len(gain))
    chosen = BINS if gain.mean() > max(CLEAR_WIN * stderr, 0.0) else 0
    metric = "accuracy" if task == "classification" else "R2"
    probe = "logistic regression" if task == "classification" else "ridge regression"
    return BinsChoice(chosen, f"numeric_bins auto: {chosen} ({probe}, {len(folds)}-fold {metric} on the training "
                              f"rows: {binned.mean():.3f} with {BINS} bins, {plain.mean():.3f} without)")


def _sample(rows: pd.DataFrame, targets: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    if len(rows) <= MAX_ROWS:
        return rows, targets
    keep = np.sort(np.random.default_rng(PROBE_SEED).choice(len(rows), MAX_ROWS, replace=False))
    return rows.iloc[keep].reset_index(drop=True), targets[keep]


def _folds(targets: np.ndarray, task: str) -> list[tuple[np.ndarray, np.ndarray]] | None:
    from sklearn.model_selection import KFold, StratifiedKFold

    if task != "classification":
        return list(KFold(FOLDS, shuffle=True, random_state=PROBE_SEED).split(targets))
    smallest = int(np.unique(targets, return_counts=True)[1].min())
    if smallest < 2:
        return None
    splitter = StratifiedKFold(min(FOLDS, smallest), shuffle=True, random_state=PROBE_SEED)
    return list(splitter.split(np.zeros(len(targets)), targets))


def _fold_score(rows: pd.DataFrame, targets: np.ndarray, train: np.ndarray, held: np.ndarray,
                task: str, plan: ColumnPlan, bins: int) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, Ridge

    from trainlab.data.tables import fit_preprocessor, transform

    preprocessor = fit_preprocessor(rows.iloc[train], plan, numeric_bins=bins)
    x_train, x_held = transform(preprocessor, rows.iloc[train]), transform(preprocessor, rows.iloc[held])
    model = LogisticRegression() if task == "classification" else Ridge()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)   # a probe: its ranking is all that is read
        model.fit(x_train, targets[train])
    return float(model.score(x_held, targets[held]))   # accuracy, or R2
