"""Score the final models on the test split: the only code that ever loads it.

Classification, for each model: accuracy, loss, per-class precision/recall/F1, expected
calibration error before and after temperature scaling (the temperature was fitted on
held-out predictions, never on test), a reliability diagram and a confusion matrix.

Regression, for each model: RMSE, MAE and R^2 in the target's own unit, and the test
coverage of its conformal interval at `selection.interval` (fitted on held-out residuals)
beside that nominal level, with a predicted-vs-actual table.

Every test score carries a 95% confidence interval, and the champion is compared with the
runner-up on the same test samples (`trainlab.evaluation.stats`).

The model to register is chosen by its calibrated *held-out* loss (NLL, or squared error),
so the test split never influences any choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from trainlab import paths
from trainlab.calibration import conformal_halfwidth, expected_calibration_error, probs_nll, reliability_rows
from trainlab.data import TaskInfo, load_split, task_info
from trainlab.ensemble.combine import load_any, load_ensemble, member_outputs
from trainlab.evaluation.stats import (Comparison, bootstrap_interval, mcnemar_exact, paired_errors_p, r2,
                                       wilson_interval)
from trainlab.models import check_recorded
from trainlab.heldout import HeldOut


@dataclass
class ModelScore:
    name: str
    test: dict[str, float]
    heldout_loss: float          # calibrated, on validation or out-of-fold predictions: chooses the champion
    heldout: str                 # what those held-out predictions were
    heldout_predictions: HeldOut = field(repr=False)
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    confusion: np.ndarray | None = None
    predictions: np.ndarray = field(default=None, repr=False)   # class indices, or values in the target's unit
    reliability: list[dict[str, float]] = field(default_factory=list, repr=False)


def final_models() -> dict[str, Path]:
    """Every final model that exists: finetuned, the scratch and linear baselines, best search
    trial, ensemble."""
    candidates = {"finetuned": paths.FINETUNED, **paths.BASELINE_MODELS,
                  "best_trial": paths.SEARCH_MODELS / "top1.pt", "ensemble": paths.ENSEMBLE}
    return {name: path for name, path in candidates.items() if path.is_file()}


def score(name: str, raw_probs: np.ndarray, y: np.ndarray, temperature: float, heldout: HeldOut,
          classes: list[str], bins: int) -> ModelScore:
    """A classifier's test scores; probabilities are rescaled by its held-out temperature."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    from trainlab.calibration import apply_temperature

    probs = apply_temperature(raw_probs, temperature)
    predicted = probs.argmax(1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y, predicted, labels=range(len(classes)), zero_division=0)
    low, high = wilson_interval(int((predicted == y).sum()), len(y))
    test = {"acc": float((predicted == y).mean()), "acc_ci_low": low, "acc_ci_high": high,
            "loss": probs_nll(probs, y),
            "ece": expected_calibration_error(probs, y, bins),
            "ece_uncalibrated": expected_calibration_error(raw_probs, y, bins),
            "temperature": temperature, "f1_macro": float(f1.mean())}
    per_class = {c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                 for c, p, r, f, s in zip(classes, precision, recall, f1, support)}
    confusion = confusion_matrix(y, predicted, labels=range(len(classes)))
    return ModelScore(name, test, heldout.calibrated(temperature).loss, heldout.describe(), heldout, per_class,
                      confusion, predicted, reliability_rows(probs, y, bins))


def score_regression(name: str, outputs: np.ndarray, y: np.ndarray, heldout: HeldOut, info: TaskInfo,
                     level: float) -> ModelScore:
    """A regression's test scores in the target's own unit, and its interval's test coverage."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    mean, std = info.target_scale or (0.0, 1.0)
    predicted, actual = outputs[:, 0] * std + mean, np.asarray(y, dtype=np.float64) * std + mean
    halfwidth = conformal_halfwidth(heldout.outputs, heldout.y, level) * std
    low, high = bootstrap_interval(actual, predicted, r2)
    test = {"rmse": float(np.sqrt(mean_squared_error(actual, predicted))),
            "mae": float(mean_absolute_error(actual, predicted)), "r2": float(r2_score(actual, predicted)),
            "r2_ci_low": low, "r2_ci_high": high,
            "loss": float(np.mean((outputs[:, 0] - y) ** 2)),
            "coverage": float(np.mean(np.abs(actual - predicted) <= halfwidth)),
            "interval_width": 2.0 * halfwidth, "interval_level": level}
    return ModelScore(name, test, heldout.loss, heldout.describe(), heldout, predictions=predicted)


def evaluate_all(bins: int, level: float) -> tuple[list[ModelScore], dict[str, float]]:
    """Scores of every final model, plus how the ensemble compares with its members."""
    test = load_split(paths.PREPARED, "target", "test")
    info = task_info(paths.PREPARED, "target")
    x_test = torch.as_tensor(test.x)
    scores, extra = [], {}
    for name, path in final_models().items():
        model, blob = load_any(path)
        check_recorded(path)   # scored as what its stage wrote, never another model copied over it
        meta = blob.get("meta", {})
        outputs = member_outputs([model], x_test, info.regression)[0].numpy().astype(np.float64)
        heldout = _heldout(meta, model, info.regression)
        if info.regression:
            scores.append(score_regression(name, outputs, test.y, heldout, info, level))
        else:
            scores.append(score(name, outputs, test.y, float(meta.get("temperature", 1.0)), heldout,
                                info.class_names, bins))
        if name == "ensemble":
            extra.update(_member_comparison(path, x_test, test.y, info.regression))
    return scores, extra


def _heldout(meta: dict, model: torch.nn.Module, regression: bool) -> HeldOut:
    if "heldout" in meta:
        return HeldOut.from_json(meta["heldout"])
    val = load_split(paths.PREPARED, "target", "val")   # a file from before held-out predictions were kept
    outputs = member_outputs([model], torch.as_tensor(val.x), regression)[0].numpy().astype(np.float64)
    return HeldOut("val", outputs, np.asarray(val.y))


def _member_comparison(path: Path, x: torch.Tensor, y: np.ndarray, regression: bool) -> dict[str, float]:
    ensemble, _ = load_ensemble(path)
    outputs = member_outputs(list(ensemble.members), x, regression).numpy().astype(np.float64)
    scores = [HeldOut("test", member, np.asarray(y)).score for member in outputs]
    name = "r2" if regression else "acc"
    return {f"test/{name}/ensemble_member_mean": float(np.mean(scores)),
            f"test/{name}/ensemble_member_best": float(np.max(scores))}


def choose_best(scores: list[ModelScore]) -> ModelScore:
    """Lowest calibrated held-out loss: a loss, unlike accuracy, rarely ties on a small split."""
    return min(scores, key=lambda s: (s.heldout_loss, s.name))


def compare_runner_up(scores: list[ModelScore], y: np.ndarray, info: TaskInfo) -> Comparison | None:
    """The champion against the model selection ranked next, on the same test samples."""
    ranked = sorted(scores, key=lambda s: (s.heldout_loss, s.name))
    if len(ranked) < 2:
        return None
    best, other = ranked[0], ranked[1]
    if info.regression:
        mean, std = info.target_scale or (0.0, 1.0)
        actual = np.asarray(y, dtype=np.float64) * std + mean
        p = paired_errors_p((actual - best.predictions) ** 2, (actual - other.predictions) ** 2)
        return Comparison(other.name, "Wilcoxon signed-rank", p)
    return Comparison(other.name, "McNemar exact", mcnemar_exact(best.predictions == y, other.predictions == y))


def champion_line(best: ModelScore, comparison: Comparison | None, regression: bool) -> str:
    """One line: the champion's test score with its 95% interval, and whether the runner-up ties it."""
    key, how = ("r2", "bootstrap") if regression else ("acc", "Wilson")
    line = (f"champion: {best.name}, test {key} {best.test[key]:.4f} (95% {how} interval "
            f"{best.test[f'{key}_ci_low']:.4f} to {best.test[f'{key}_ci_high']:.4f})")
    return line + (f"; {comparison.describe()}" if comparison else "")


def flat_metrics(scores: list[ModelScore], extra: dict[str, float]) -> dict[str, float]:
    """Stable keys for `dvc metrics`: test/<metric>/<model>."""
    metrics = {f"test/{metric}/{s.name}": value for s in scores for metric, value in s.test.items()}
    metrics.update({f"heldout/loss/{s.name}": s.heldout_loss for s in scores})
    return {**metrics, **extra}


def confusion_rows(score: ModelScore, y: np.ndarray, classes: list[str]) -> list[dict[str, str]]:
    """Rows for DVC's confusion template (actual vs predicted); none for a regression."""
    if score.confusion is None:
        return []
    return [{"actual": classes[a], "predicted": classes[p]} for a, p in zip(y, score.predictions)]


def prediction_rows(score: ModelScore, y: np.ndarray, info: TaskInfo) -> list[dict[str, float]]:
    """Rows for DVC's scatter template (actual vs predicted, the target's unit); none for classes."""
    if not info.regression:
        return []
    mean, std = info.target_scale or (0.0, 1.0)
    return [{"actual": float(a) * std + mean, "predicted": float(p)} for a, p in zip(y, score.predictions)]


def reliability_table(score: ModelScore) -> list[dict[str, object]]:
    """The champion's reliability diagram for `dvc plots` (x: confidence, y: accuracy); the PNG has all."""
    return [{"model": score.name, **row} for row in score.reliability]
