"""What a training leaves behind: model file, metrics.json and details.json, curves, diagnosis.md.

This is the one module that writes a training stage's outputs (through `training.curves` and
`models`). It returns what the stage then hands to its tracking run: metrics, tags and
the paths of the files to attach (`StageRun.record_training`). A diverged training is
diagnosed here too, by the stage that trained it (`except TrainingDiverged`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainlab import paths
from trainlab.config import Params
from trainlab.errors import TrainingDiverged
from trainlab.io import write_text
from trainlab.models import save_model
from trainlab.training.curves import Curves, DiagnosisReport, diagnose_training, write_training_reports
from trainlab.heldout import model_meta, selection_metrics
from trainlab.serving import served_spec
from trainlab.training.fit import TrainedModel
from trainlab.training.lr_choice import write_range_test


@dataclass(frozen=True)
class TrainingOutputs:
    """The files one training wrote, and what its tracking run should record of them."""

    metrics: dict[str, Any]                 # every score, as written to details.json
    step: int                               # the step of the final.* metrics: epochs run
    tags: dict[str, Any]                    # diagnosis, stop reason, precision, class count
    artifacts: list[tuple[Path, str | None]]  # (file, MLflow artifact folder)
    backfill: Curves | None                 # curves from before a resume (or of a CV refit)
    diagnosis: DiagnosisReport
    temperature: float = 1.0                # calibration fitted on the held-out predictions
    params: dict[str, Any] | None = None    # what the training chose itself (`lr/chosen`)


def tuning_stage(stage: str) -> str:
    """Which params section the diagnosis's suggestions name: search trials fine-tune."""
    return "pretrain" if stage == "pretrain" else "finetune"


def write_training_outputs(trained: TrainedModel, params: Params, stage: str, label: str,
                           model_path: Path | None, report_dir: Path, meta: dict[str, Any] | None = None,
                           extra_metrics: dict[str, Any] | None = None) -> TrainingOutputs:
    """Model file, metrics/curves for DVC and diagnosis.md; returns what to track of them."""
    held = trained.heldout
    classes = None if trained.pretext or trained.info.regression else trained.info.num_classes
    diagnosis = diagnose_training(trained.curves, classes,
                                  label=label, stage=tuning_stage(stage),
                                  val_samples=len(held.y) if held and held.kind == "val" else None)
    selection = model_meta(held, params.selection.calibrate)
    if held is not None:
        extra_metrics = {**(extra_metrics or {}), **selection_metrics(held, selection["temperature"])}
    # A baseline's folder (models/baselines/<name>) gets its scores, not a headline of the stage's.
    metrics = write_training_reports(report_dir, trained.result, {**diagnosis.summary, **(extra_metrics or {})},
                                     stage if report_dir == paths.stage_reports(stage) else None)
    write_text(report_dir / "artifacts" / "diagnosis.md", diagnosis.markdown)
    artifacts: list[tuple[Path, str | None]] = [(report_dir / "artifacts" / "curves.png", "plots"),
                                                (report_dir / "artifacts" / "diagnosis.md", None)]
    chosen: dict[str, Any] = {}
    if trained.lr_test is not None:   # optimizer.lr: auto
        json_file, png = write_range_test(trained.lr_test, report_dir / "artifacts", label)
        artifacts += [(png, "plots"), (json_file, None)]
        chosen["lr/chosen"] = trained.lr_test.chosen
    if model_path is not None:
        save_model(model_path, trained.model, params.model, trained.info.input_shape,
                   trained.info.class_names, meta={"stage": stage, **selection, **(meta or {})})
        if params.tracking.log_models:   # the DVC output byte for byte, beside the MLflow model
            artifacts.append((model_path, "model"))
    resumed = trained.result.resumed_from_step
    tags = {"trainlab.diagnosis": ",".join(diagnosis.names), "trainlab.stop_reason": trained.result.stop_reason,
            "precision": trained.result.precision, "data.num_classes": trained.info.num_classes}
    if resumed or trained.cross_validated:
        tags["trainlab.resumed_from_step"] = resumed
    return TrainingOutputs(metrics, len(trained.result.history), tags, artifacts,
                           trained.curves if resumed or trained.cross_validated else None, diagnosis,
                           float(selection.get("temperature", 1.0)), chosen)


def publish_training(run, trained: TrainedModel, params: Params, model_path: Path | None, report_dir: Path,
                     meta: dict[str, Any] | None = None,
                     extra_metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write a finished training's outputs, hand them to its run (a tracking StageRun) and
    print the diagnosis. Returns the metrics."""
    outputs = write_training_outputs(trained, params, run.stage, run.run_name, model_path, report_dir,
                                     meta, extra_metrics)
    run.record_training(outputs.metrics, outputs.step, outputs.tags, outputs.artifacts, outputs.backfill,
                        outputs.params)
    if params.tracking.log_models:
        task = "source" if run.stage == "pretrain" else "target"
        # Named after the file (pretrained, finetuned, scratch) or the run (probe).
        name = model_path.stem if model_path is not None else run.run_name.rsplit("/", 1)[-1]
        run.log_model(served_spec(trained.model, trained.info, task, outputs.temperature,
                                  probabilities=not trained.pretext, heldout=trained.heldout,
                                  level=params.selection.interval), name)
    print(outputs.diagnosis.terminal)
    return outputs.metrics


def publish_divergence(run, err: TrainingDiverged) -> None:
    """A diverged training is diagnosed too, from its curves up to the blow-up: printed and
    logged to its run (a tracking StageRun). It writes no file: the last good outputs stay."""
    if err.curves is None or run.run_id is None:   # no run of its own: a DDP replica's NullRun
        return
    diagnosis = diagnose_training(err.curves, err.num_classes, label=run.run_name, stage=tuning_stage(run.stage))
    run.record_diagnosis(diagnosis.markdown, diagnosis.names)
    print(diagnosis.terminal, flush=True)
