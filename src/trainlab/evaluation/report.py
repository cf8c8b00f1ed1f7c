"""What evaluate writes and logs: its declared report files, its figures, its MLflow metrics.

Every file dvc.yaml declares for evaluate is written for every task (DVC fails a stage
whose declared output is missing): a figure that does not apply to the task (the confusion
matrix of a regression, predicted-vs-actual of a classifier) is an empty table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainlab import paths
from trainlab.data import TaskInfo
from trainlab.dvc_metrics import evaluate_headline, write_stage_metrics
from trainlab.evaluation.scores import (ModelScore, champion_line, choose_best, compare_runner_up, confusion_rows,
                                 flat_metrics, prediction_rows, reliability_table)
from trainlab.evaluation.plots import plot_confusion, plot_predictions, plot_reliability
from trainlab.io import write_json


@dataclass(frozen=True)
class Evaluation:
    champion: ModelScore
    metrics: dict[str, float]   # every score (details.json); metrics.json holds the headline
    summary: str          # the champion's line: its score, interval, and the runner-up comparison


def publish_evaluation(run, scores: list[ModelScore], extra: dict[str, float], info: TaskInfo,
                       test_y: np.ndarray) -> Evaluation:
    """Write evaluate's reports and figures and hand them to its run (a tracking StageRun)."""
    reports, figures = paths.stage_reports("evaluate"), paths.stage_artifacts("evaluate")
    best = choose_best(scores)
    comparison = compare_runner_up(scores, test_y, info)
    metrics = {**flat_metrics(scores, extra), **{f"champion/{k}": v for k, v in best.test.items()}}
    summary = champion_line(best, comparison, info.regression)
    write_stage_metrics(reports, "evaluate", metrics,
                        evaluate_headline(best.test, {s.name: s.test for s in scores}, info.regression))
    write_json(reports / "per_class.json", {s.name: s.per_class for s in scores})
    write_json(reports / "champion.json", {
        "model": best.name, "heldout_loss": best.heldout_loss, "selected_on": best.heldout, "summary": summary,
        "runner_up": None if comparison is None else {"model": comparison.other, "test": comparison.test,
                                                      "p_value": comparison.p_value, "tied": comparison.tied}})
    write_json(reports / "confusion.json", confusion_rows(best, test_y, info.class_names))
    write_json(reports / "reliability.json", reliability_table(best))
    write_json(reports / "predictions.json", prediction_rows(best, test_y, info))
    run.log_metrics(metrics, step=0)
    if info.regression:
        mean, std = info.target_scale or (0.0, 1.0)
        actual = np.asarray(test_y, dtype=np.float64) * std + mean
        for s in scores:
            run.log_artifact(plot_predictions(s, actual, info.class_names[0], figures / f"predictions_{s.name}.png"),
                             "predictions")
    else:
        run.log_artifact(plot_reliability(scores, figures / "reliability.png"), "calibration")
        for s in scores:
            run.log_artifact(plot_confusion(s, info.class_names, figures / f"confusion_{s.name}.png"), "confusion")
    run.log_artifact(reports / "per_class.json")
    run.log_artifact(reports / "champion.json")
    run.set_tags({"best_model": best.name, "trainlab.champion_tied": str(bool(comparison and comparison.tied)).lower()})
    return Evaluation(best, metrics, summary)


def score_table(scores: list[ModelScore], regression: bool) -> str:
    """The final models side by side, one line each."""
    if regression:
        rows = [f"{'model':<12} {'test R2':>8} {'(95% interval)':>17} {'RMSE':>10} {'MAE':>10} {'coverage':>9}"]
        rows += [f"{s.name:<12} {s.test['r2']:>8.4f} {s.test['r2_ci_low']:>8.3f}-{s.test['r2_ci_high']:<8.3f} "
                 f"{s.test['rmse']:>10.4g} {s.test['mae']:>10.4g} {s.test['coverage']:>9.3f}" for s in scores]
        return "\n".join(rows)
    rows = [f"{'model':<12} {'test acc':>9} {'(95% interval)':>15} {'loss':>7} {'ECE':>6} {'(raw)':>6} {'F1':>6}"]
    rows += [f"{s.name:<12} {s.test['acc']:>9.4f} {s.test['acc_ci_low']:>7.3f}-{s.test['acc_ci_high']:<7.3f} "
             f"{s.test['loss']:>7.4f} {s.test['ece']:>6.3f} {s.test['ece_uncalibrated']:>6.3f} "
             f"{s.test['f1_macro']:>6.3f}" for s in scores]
    return "\n".join(rows)
