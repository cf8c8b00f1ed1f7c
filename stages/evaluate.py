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
    from trainlab import paths
    from trainlab.params_record import check_upstream, load_stage_params
    from trainlab.data import load_split, task_info
    from trainlab.ensemble.combine import load_any
    from trainlab.errors import DataError
    from trainlab.evaluation import evaluate_all, final_models
    from trainlab.evaluation_report import publish_evaluation, score_table
    from trainlab.io import require_writable
    from trainlab.serving import served_spec
    from trainlab.tracking import StageRun
    from trainlab.tracking.model_card import Champion
    from trainlab.training import data_hashes

    params, ran_with = load_stage_params("evaluate", params_path)   # ran_with: checked before writing
    check_upstream("evaluate")   # every model it scores was made with the params dvc.lock records
    require_writable(*paths.output_folders("evaluate"))   # before the work, not after it
    with StageRun("evaluate", params, inputs=data_hashes(), params_file=params_path) as run:
        scores, extra = evaluate_all(params.evaluate.calibration_bins, params.selection.interval)
        if not scores:
            raise DataError("evaluate: no final model found in models/; run the pipeline first (dvc repro)")
        info, test_y = task_info(paths.PREPARED, "target"), load_split(paths.PREPARED, "target", "test").y
        ran_with.check_unchanged()
        evaluation = publish_evaluation(run, scores, extra, info, test_y)
        ran_with.write()   # reports/evaluate/artifacts/params.json
        best = evaluation.champion
        if params.evaluate.register_model:
            model, _ = load_any(final_models()[best.name])
            spec = served_spec(model, info, "target", best.test.get("temperature", 1.0),
                               heldout=best.heldout_predictions, level=params.selection.interval)
            champion = Champion(best.name, list(info.class_names), best.test, best.heldout_loss, best.heldout,
                                len(test_y))
            registered = run.register_model(spec, params.evaluate.model_name, params.evaluate.alias, champion,
                                            params.evaluate.promote)
            click.echo(registration_line(best.name, params.evaluate.model_name, params.evaluate.alias, registered))
    click.echo(score_table(scores, info.regression))
    click.echo(evaluation.summary)
    finished(run, "evaluate")


def registration_line(model: str, name: str, alias: str, registered) -> str:
    """'registered ensemble as trainlab v3 @champion: <why>', or @challenger with why and how to promote it."""
    line = f"registered {model} as {name} v{registered.version} @{registered.alias}: {registered.why}"
    if registered.alias != alias:
        line += f"; to make it {alias}: trainlab promote {registered.version}"
    return line
