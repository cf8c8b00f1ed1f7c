"""`trainlab evaluate`: score every final model on the held-out test split, side by side.

The only stage that reads the test split. Writes reports/evaluate/metrics.json
(stable keys test/<metric>/<model> for `dvc metrics diff`), per-class scores, the
ensemble's confusion matrix for `dvc plots show`, and registers the model with the
lowest calibrated held-out loss (validation or out-of-fold) in the MLflow model registry
under evaluate.alias, temperature-scaled.
"""

import click

from .options import params_option


@click.command(help=__doc__)
@params_option
def command(params_path: str) -> None:
    from .report import finished, started

    started("evaluate")   # before the imports below, which take seconds
    from trainlab import paths
    from trainlab.config import load_params
    from trainlab.data import load_split, task_info
    from trainlab.ensemble.combine import load_any
    from trainlab.errors import DataError
    from trainlab.evaluation import (choose_best, confusion_rows, evaluate_all, final_models, flat_metrics,
                                     plot_confusion, plot_reliability, reliability_table)
    from trainlab.io import require_writable, write_json
    from trainlab.outputs import served_spec
    from trainlab.tracking import StageRun
    from trainlab.tracking.model_card import Champion
    from trainlab.training import data_hashes

    params = load_params(params_path)
    require_writable(*paths.output_folders("evaluate"))   # before the work, not after it
    reports = paths.stage_reports("evaluate")
    with StageRun("evaluate", params, inputs=data_hashes(), params_file=params_path) as run:
        scores, extra = evaluate_all(params.evaluate.calibration_bins)
        if not scores:
            raise DataError("evaluate: no final model found in models/; run the pipeline first (dvc repro)")
        best = choose_best(scores)
        metrics = {**flat_metrics(scores, extra), **{f"champion/{k}": v for k, v in best.test.items()}}
        classes = task_info(paths.PREPARED, "target").class_names
        test_y = load_split(paths.PREPARED, "target", "test").y
        final = best   # the confusion matrix DVC draws is the champion's
        write_json(reports / "metrics.json", metrics)
        write_json(reports / "per_class.json", {s.name: s.per_class for s in scores})
        write_json(reports / "champion.json", {"model": best.name, "heldout_loss": best.heldout_loss,
                                               "selected_on": best.heldout})
        write_json(reports / "confusion.json", confusion_rows(final, test_y, classes))
        write_json(reports / "reliability.json", reliability_table(best))
        run.log_artifact(plot_reliability(scores, paths.stage_artifacts("evaluate") / "reliability.png"),
                         "calibration")
        run.log_metrics(metrics, step=0)
        for s in scores:
            run.log_artifact(plot_confusion(s, classes, paths.stage_artifacts("evaluate") / f"confusion_{s.name}.png"),
                             "confusion")
        run.log_artifact(reports / "per_class.json")
        run.set_tags({"best_model": best.name})
        if params.evaluate.register_model:
            model, _ = load_any(final_models()[best.name])
            spec = served_spec(model, task_info(paths.PREPARED, "target"), "target", best.test["temperature"])
            champion = Champion(best.name, list(classes), best.test, best.heldout_loss, best.heldout, len(test_y))
            version = run.register_model(spec, params.evaluate.model_name, params.evaluate.alias, champion)
            click.echo(f"registered {best.name} as {params.evaluate.model_name} v{version} "
                       f"(alias {params.evaluate.alias}, chosen on held-out loss {best.heldout_loss:.4f}, "
                       f"{best.heldout})")
    click.echo(f"{'model':<12} {'test acc':>9} {'loss':>7} {'ECE':>6} {'(raw)':>6} {'F1':>6}")
    for s in scores:
        click.echo(f"{s.name:<12} {s.test['acc']:>9.4f} {s.test['loss']:>7.4f} {s.test['ece']:>6.3f} "
                   f"{s.test['ece_uncalibrated']:>6.3f} {s.test['f1_macro']:>6.3f}")
    finished(run, "evaluate")
