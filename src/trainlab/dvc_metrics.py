"""The few numbers DVC shows: what a person compares between experiments, at most 25 in all.

Every stage computes more than anyone compares (per-split class counts, train losses,
epochs, trial counts, every score of every final model). All of it goes to the stage's
MLflow run and to its detail report (reports/<stage>/details.json, a plain output; for
prepare the prepared data's manifest.json).
The file dvc.yaml declares as the stage's `metrics`, reports/<stage>/metrics.json, holds
only the headline below, so `dvc metrics show` and `dvc exp show` stay readable:

- evaluate: the champion's test score with its interval, its loss and its calibration
  (ECE; for a regression RMSE and the interval's coverage), and `gain`, the transfer gain on
  the test split (fine-tuned minus scratch), under names without a slash; each final
  model's test score as test/<model>;
- the stages before it: a few numbers each, named <stage>/<name>, that say whether it went well.

Every name is unique across the files (DVC prefixes a shared name with its file's path in
`dvc exp show`: 30 characters of header), and only the champion's have no slash, so the
README's one-liner

    dvc exp show --only-changed --drop 'Created|State|Executor|.*/'

(the slash drops the deps columns too: they are paths) shows the experiments, the params
each changed and the champion's figures, in at most 160 characters after two experiments
(tests/test_mlflow_ui.py). No wall-clock time is a DVC metric: it would change dvc.lock on
every run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from trainlab.io import write_json
from trainlab.stage_registry import PIPELINE

MAX_VALUES = 25   # `dvc metrics show`, all stages together, for any task kind

# stage -> {detail key: headline key} (each pipeline stage's `headline` in trainlab.stage_registry);
# a detail key the task lacks (val/acc of a pretext task) is left out.
HEADLINE: dict[str, dict[str, str]] = {stage.name: dict(stage.headline) for stage in PIPELINE if stage.headline}

# The champion's figures a person compares, by the score the task has (evaluate's ModelScore.test keys).
CHAMPION_FIELDS = {
    "acc": {"acc": "acc", "acc_ci_low": "acc_low", "acc_ci_high": "acc_high", "loss": "loss", "ece": "ece"},
    "r2": {"r2": "r2", "r2_ci_low": "r2_low", "r2_ci_high": "r2_high", "rmse": "rmse", "coverage": "coverage"},
}


def headline(stage: str, details: Mapping[str, Any]) -> dict[str, Any]:
    """The stage's metrics.json from its full scores (evaluate: see `evaluate_headline`)."""
    return {short: details[key] for key, short in HEADLINE[stage].items() if key in details}


def evaluate_headline(champion: Mapping[str, float], test_scores: Mapping[str, Mapping[str, float]],
                      regression: bool) -> dict[str, float]:
    """evaluate's metrics.json: the champion's figures; `gain`, the fine-tuned model's test
    score minus the scratch baseline's (where both were trained); then each final model's
    test score as test/<model> (finetuned, scratch, linear, best_trial, ensemble)."""
    score = "r2" if regression else "acc"
    metrics = {short: champion[key] for key, short in CHAMPION_FIELDS[score].items() if key in champion}
    if "finetuned" in test_scores and "scratch" in test_scores:
        metrics["gain"] = test_scores["finetuned"][score] - test_scores["scratch"][score]
    metrics.update({f"test/{name}": test[score] for name, test in test_scores.items()})
    return metrics


def write_stage_metrics(folder: Path, stage: str, details: Mapping[str, Any],
                        headline_values: Mapping[str, Any] | None = None) -> None:
    """The one writer of a stage's scores: details.json (all of them) and metrics.json (its
    headline: `headline_values` where given, as evaluate's, else `headline(stage, details)`)."""
    write_json(folder / "details.json", dict(details))
    write_json(folder / "metrics.json", dict(headline(stage, details) if headline_values is None
                                             else headline_values))
