"""`trainlab evaluate`: score every final model on the held-out test split, side by side.

The only stage that reads the test split. Writes reports/evaluate/details.json (every
score, stable keys test/<metric>/<model>, each with its 95% interval) and metrics.json
(what `dvc metrics diff` shows: the champion's score, interval, loss and calibration, each
final model's test score, the transfer gain), per-class scores, the champion's confusion
matrix (classes) or predicted against actual (a regression) for `dvc plots show`, and registers the model with the
lowest calibrated held-out loss (validation or out-of-fold) in the MLflow model registry,
temperature-scaled or with its conformal interval, as a new version. That version takes
evaluate.alias only if none holds it yet or it has a lower held-out loss on the same
held-out data (evaluate.promote: auto; always; never); otherwise it gets `challenger` and
the line that says so names the command that promotes it (`trainlab promote VERSION`).
"""

import click

from .options import params_option


@click.command(help=__doc__)
@params_option
def command(params_path: str) -> None:
    from .report import finished, started

    started("evaluate")   # before the imports below, which take seconds
    from trainlab.evaluation.stage import run_evaluate
    from trainlab.io import require_writable
    from trainlab.params_record import check_upstream, load_stage_params
    from trainlab.stage_registry import output_folders

    params, ran_with = load_stage_params("evaluate", params_path)   # ran_with: checked before writing
    check_upstream("evaluate")   # every model it scores was made with the params dvc.lock records
    require_writable(*output_folders("evaluate"))   # before the work, not after it
    finished(run_evaluate(params, params_path, ran_with), "evaluate")
