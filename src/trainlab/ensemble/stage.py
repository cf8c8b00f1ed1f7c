"""The ensemble stage from loaded params to its outputs: the ensemble built and saved, its
manifest, scores and members written, the MLflow model logged."""

from __future__ import annotations

from trainlab import paths
from trainlab.config import Params
from trainlab.data import data_hashes, task_info
from trainlab.dvc_metrics import write_stage_metrics
from trainlab.ensemble.assemble import build_ensemble
from trainlab.io import write_json
from trainlab.models import write_manifest
from trainlab.params_record import ParamsRecord
from trainlab.serving import served_spec
from trainlab.tracking import StageRun


def run_ensemble(params: Params, params_path: str, ran_with: ParamsRecord) -> StageRun:
    """Build, write and log the ensemble; prints its scores; returns the stage's run."""
    reports = paths.stage_reports("ensemble")
    with StageRun("ensemble", params, inputs=data_hashes(paths.PREPARED), params_file=params_path) as run:
        built = build_ensemble(params)
        ran_with.check_unchanged(written=[paths.ENSEMBLE])   # build_ensemble saved the model: removed if it stops
        write_manifest("ensemble", [paths.ENSEMBLE], params=ran_with.values)   # what evaluate checks it against
        write_stage_metrics(reports, "ensemble", built.metrics)
        write_json(reports / "members.json", built.members)
        run.log_metrics(built.metrics, step=0)
        run.log_dict({"members": built.members}, "ensemble/members.json")
        if params.tracking.log_models:
            run.log_artifact(paths.ENSEMBLE, "model")   # the DVC output byte for byte
            run.log_model(served_spec(built.ensemble, task_info(paths.PREPARED, "target"), "target",
                                      built.metrics["calibration/temperature"], heldout=built.heldout,
                                      level=params.selection.interval), "ensemble")
    for key, value in built.metrics.items():   # counts as counts (members: 2), scores to 4 places
        print(f"{key}: {value}" if isinstance(value, int) else f"{key}: {value:.4f}")
    return run
