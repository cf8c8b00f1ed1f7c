"""The evaluate stage from loaded params to its reports: every final model scored on the test
split, the reports written (`trainlab.evaluation.report`), and the champion registered in
MLflow's model registry, where the params ask for it."""

from __future__ import annotations

from trainlab import paths
from trainlab.config import Params
from trainlab.data import data_hashes, load_split, task_info
from trainlab.ensemble.combine import load_any
from trainlab.errors import DataError
from trainlab.evaluation.scores import evaluate_all, final_models
from trainlab.evaluation.report import Evaluation, publish_evaluation, score_table
from trainlab.params_record import ParamsRecord
from trainlab.serving import served_spec
from trainlab.tracking import StageRun
from trainlab.tracking.model_card import Champion


def run_evaluate(params: Params, params_path: str, ran_with: ParamsRecord) -> StageRun:
    """Score, report, register; prints the score table and the champion's line; returns the run."""
    with StageRun("evaluate", params, inputs=data_hashes(paths.PREPARED), params_file=params_path) as run:
        scores, extra = evaluate_all(params.evaluate.calibration_bins, params.selection.interval)
        if not scores:
            raise DataError("evaluate: no final model found in models/; run the pipeline first (dvc repro)")
        info, test_y = task_info(paths.PREPARED, "target"), load_split(paths.PREPARED, "target", "test").y
        ran_with.check_unchanged()
        evaluation = publish_evaluation(run, scores, extra, info, test_y)
        ran_with.write()   # reports/evaluate/artifacts/params.json
        if params.evaluate.register_model:
            _register(run, params, evaluation, info, len(test_y))
    print(score_table(scores, info.regression))
    print(evaluation.summary, flush=True)
    return run


def _register(run: StageRun, params: Params, evaluation: Evaluation, info, test_samples: int) -> None:
    best, cfg = evaluation.champion, params.evaluate
    model, _ = load_any(final_models()[best.name])
    spec = served_spec(model, info, "target", best.test.get("temperature", 1.0),
                       heldout=best.heldout_predictions, level=params.selection.interval)
    champion = Champion(best.name, list(info.class_names), best.test, best.heldout_loss, best.heldout, test_samples)
    registered = run.register_model(spec, cfg.model_name, cfg.alias, champion, cfg.promote)
    print(registration_line(best.name, cfg.model_name, cfg.alias, registered), flush=True)


def registration_line(model: str, name: str, alias: str, registered) -> str:
    """'registered ensemble as trainlab v3 @champion: <why>', or @challenger with why and how to promote it."""
    line = f"registered {model} as {name} v{registered.version} @{registered.alias}: {registered.why}"
    if registered.alias != alias:
        line += f"; to make it {alias}: trainlab promote {registered.version}"
    return line
