"""One search trial: sample params, fine-tune with them (pruned on val), keep the model."""

from __future__ import annotations

import sys
from typing import Any

import optuna

from trainlab import paths
from trainlab.config import Params, with_overrides
from trainlab.hashing import sha256_file
from trainlab.engine import Hook, LoopState
from trainlab.errors import TrainingDiverged
from trainlab.models import save_model
from trainlab.training.outputs import publish_divergence
from trainlab.serving import served_spec
from trainlab.training.curves import summary_metrics
from trainlab.search.space import suggest
from trainlab.heldout import model_meta
from trainlab.tracking import StageRun
from trainlab.training import finish
from trainlab.training.tracking_hook import tracking_hooks
from trainlab.training.transfer import finetune, finetune_request

# Trial user attribute: SHA-256 of the model file the trial wrote. Publishing checks it,
# so only a file this very trial of this study wrote can become a top-k model.
MODEL_SHA256 = "model_sha256"
# Trial user attribute: the trial's MLflow run, to go from the study to its curves and files.
MLFLOW_RUN_ID = "mlflow_run_id"


class PruningHook(Hook):
    """Reports each epoch's validation metric to Optuna and stops the trial when told to."""

    def __init__(self, trial: optuna.Trial, metric: str):
        self.trial, self.metric = trial, metric

    def on_epoch_end(self, state: LoopState, metrics: dict[str, float]) -> None:
        # Step = epoch counted from 1, as MLflow's epoch axis and DVC's curves count it.
        self.trial.report(metrics[self.metric], state.epoch + 1)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {state.epoch + 1} ({self.metric}={metrics[self.metric]:.4f})")


def trial_params(params: Params, trial: optuna.Trial, slot: int, threads: int | None) -> Params:
    """The trial's full config: sampled keys, a per-slot seed, quiet progress."""
    overrides = {**suggest(trial, params.search.space), "seed": params.seed + slot,
                 "trainer.progress": "off"}
    if params.search.epochs:
        overrides["finetune.epochs"] = params.search.epochs
    if threads:
        overrides["trainer.threads"] = threads
    return with_overrides(params, overrides)


def trial_run_name(slot: int, values: dict[str, Any]) -> str:
    """'search trial 3 (lr=0.0031, dropout=0.2)': what the run table shows of a trial."""
    shown = ", ".join(f"{key.rsplit('.', 1)[-1]}={value:.3g}" if isinstance(value, float)
                      else f"{key.rsplit('.', 1)[-1]}={value}" for key, value in values.items())
    return f"search trial {slot} ({shown})"[:240] if shown else f"search trial {slot}"


def run_trial(trial: optuna.Trial, slot: int, study_name: str, params: Params, parent_run_id: str | None,
              threads: int | None) -> float:
    """Fine-tune with the trial's params; returns the best epoch's search.metric (or raises TrialPruned)."""
    config = trial_params(params, trial, slot, threads)
    resume_name = f"search-slot-{slot:03d}"
    pruned: optuna.TrialPruned | None = None
    with StageRun("search", config, parent_run_id=parent_run_id, run_name=trial_run_name(slot, trial.params),
                  extra_tags={"optuna.slot": str(slot), "optuna.trial_number": str(trial.number),
                              "optuna.study_name": study_name}) as run:
        trial.set_user_attr(MLFLOW_RUN_ID, run.run_id)
        try:
            request = finetune_request(config, resume_name=resume_name, label=f"trial {slot}",
                                       hooks=tracking_hooks(run), pruning=PruningHook(trial, params.search.metric))
            trained = finetune(request, paths.PRETRAINED)
        except TrainingDiverged as err:
            publish_divergence(run, err)   # the study goes on (search.loop tells it FAIL)
            raise
        except optuna.TrialPruned as err:
            pruned = err
            run.mark_pruned(str(err))   # named "... [pruned]": MLflow has no PRUNED status
            paths.resume_checkpoint(resume_name).unlink(missing_ok=True)
        else:
            metrics = summary_metrics(trained.result)
            if trained.result.resumed_from_step:   # this run starts mid-way: the curves before the kill
                run.backfill(trained.curves)
            run.log_scores(metrics, step=len(trained.result.history))
            run.set_tags({"optuna.state": "COMPLETE"})
            model_path = paths.search_trial_model(study_name, slot)
            selection = model_meta(trained.heldout, config.selection.calibrate)
            save_model(model_path, trained.model, config.model, trained.info.input_shape, trained.info.class_names,
                       meta={"study": study_name, "slot": slot, "trial": trial.number, "params": trial.params,
                             "val/loss": metrics["val/loss"], **({"val/acc": metrics["val/acc"]}
                                                                 if "val/acc" in metrics else {}), **selection})
            trial.set_user_attr(MODEL_SHA256, sha256_file(model_path))
            if config.tracking.log_models and config.tracking.log_trial_models:
                run.log_model(served_spec(trained.model, trained.info, "target", selection.get("temperature", 1.0),
                                          heldout=trained.heldout, level=config.selection.interval),
                              f"trial-{slot:03d}")
            elif config.tracking.log_models:
                # The file only, by default: an MLflow model costs every trial a pickled copy,
                # a model load and a predict on its input example (bench/trial_models.py).
                run.log_artifact(model_path, "model")
            finish(trained)
    if pruned is not None:
        print(f"trial {slot}: {pruned}", file=sys.stderr)
        raise pruned
    value = metrics[params.search.metric]
    accuracy = f" val/acc={metrics['val/acc']:.4f}" if "val/acc" in metrics else ""
    print(f"trial {slot}: {params.search.metric}={value:.4f}{accuracy} params={trial.params}", file=sys.stderr)
    return value
