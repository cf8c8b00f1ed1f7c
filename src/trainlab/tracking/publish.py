"""Write a finished training run's outputs and attach them to its MLflow run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainlab.config import Params
from trainlab.errors import TrainingDiverged
from trainlab.models import save_model
from trainlab.io import write_text
from trainlab.reporting import diagnose_training, write_training_reports
from trainlab.selection import model_meta, selection_metrics
from trainlab.tracking.run import StageRun
from trainlab.training import TrainedModel


def publish_divergence(run: StageRun, err: TrainingDiverged) -> None:
    """A diverged training is diagnosed too, from its curves up to the blow-up: printed and logged.

    Only the innermost run reports it (a diverged baseline's child run, not also its parent).
    """
    stage = "pretrain" if run.stage == "pretrain" else "finetune"
    diagnosis = diagnose_training(err.curves, err.num_classes, label=run.run_name, stage=stage)
    err.curves = None
    run.log_text(diagnosis.markdown, "diagnosis.md")
    run.set_tags({"trainlab.diagnosis": ",".join(diagnosis.names)})
    print(diagnosis.terminal, flush=True)


def publish_training(run: StageRun, trained: TrainedModel, params: Params, model_path: Path | None,
                     report_dir: Path, meta: dict[str, Any] | None = None,
                     extra_metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """Model file, metrics/curves for DVC, diagnosis; the same logged to MLflow. Returns the metrics."""
    if trained.result.resumed_from_step or trained.cross_validated:
        # The run of a resumed stage starts mid-way: give it the curves from before the kill.
        run.backfill(trained.curves)
        run.set_tags({"trainlab.resumed_from_step": trained.result.resumed_from_step})
    stage = "pretrain" if run.stage == "pretrain" else "finetune"   # search trials fine-tune
    selected_on = trained.heldout
    diagnosis = diagnose_training(trained.curves, None if trained.pretext else trained.info.num_classes,
                                  label=run.run_name, stage=stage,
                                  val_samples=len(selected_on.y) if selected_on and selected_on.kind == "val" else None)
    selection = model_meta(trained.heldout, params.selection.calibrate)
    if trained.heldout is not None:
        extra_metrics = {**(extra_metrics or {}), **selection_metrics(trained.heldout, selection["temperature"])}
    metrics = write_training_reports(report_dir, trained.result, {**diagnosis.summary, **(extra_metrics or {})})
    write_text(report_dir / "artifacts" / "diagnosis.md", diagnosis.markdown)
    if model_path is not None:
        save_model(model_path, trained.model, params.model, trained.info.input_shape,
                   trained.info.class_names, meta={"stage": run.stage, **selection, **(meta or {})})
    run.log_metrics({f"final/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))},
                    step=len(trained.result.history))
    run.set_tags({"trainlab.diagnosis": ",".join(diagnosis.names), "trainlab.stop_reason": trained.result.stop_reason,
                  "precision": trained.result.precision,
                  "data.num_classes": trained.info.num_classes})
    run.log_artifact(report_dir / "artifacts" / "curves.png", "plots")
    run.log_artifact(report_dir / "artifacts" / "diagnosis.md")
    if model_path is not None and params.tracking.log_models:
        run.log_artifact(model_path, "model")
    print(diagnosis.terminal)
    return metrics

