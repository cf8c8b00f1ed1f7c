"""One search trial: sample params, fine-tune with them (pruned on val), keep the model."""

from __future__ import annotations

import sys
from pathlib import Path

import optuna

from trainlab import paths
from trainlab.config import Params, with_overrides
from trainlab.engine import Hook, LoopState
from trainlab.models import save_model
from trainlab.reporting import summary_metrics
from trainlab.search.space import suggest
from trainlab.selection import model_meta
from trainlab.search.study import SLOT, requeue_interrupted
from trainlab.tracking import StageRun
from trainlab.training import finish
from trainlab.transfer import finetune

TRIAL_MODELS = paths.STATE / "search" / "trials"


class PruningHook(Hook):
    """Reports each epoch's validation metric to Optuna and stops the trial when told to."""

    def __init__(self, trial: optuna.Trial, metric: str):
        self.trial, self.metric = trial, metric

    def on_epoch_end(self, state: LoopState, metrics: dict[str, float]) -> None:
        self.trial.report(metrics[self.metric], state.epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {state.epoch + 1} ({self.metric}={metrics[self.metric]:.4f})")


def trial_params(params: Params, trial: optuna.Trial, threads: int | None) -> tuple[int, Params]:
    """The trial's slot and its full config: sampled keys, a per-slot seed, quiet progress."""
    # The slot was written to storage by the sampler's before_trial; the Trial caches attrs.
    slot = int(trial.study._storage.get_trial_user_attrs(trial._trial_id)[SLOT])
    overrides = {**suggest(trial, params.search.space), "seed": params.seed + slot,
                 "trainer.progress": "off"}
    if params.search.epochs:
        overrides["finetune.epochs"] = params.search.epochs
    if threads:
        overrides["trainer.threads"] = threads
    return slot, with_overrides(params, overrides)


def trial_model_path(slot: int) -> Path:
    return TRIAL_MODELS / f"slot-{slot:03d}.pt"


def run_trial(trial: optuna.Trial, params: Params, parent_run_id: str | None, threads: int | None) -> float:
    """Objective: fine-tune with the trial's params; returns the best epoch's search.metric."""
    try:
        return _run_trial(trial, params, parent_run_id, threads)
    except KeyboardInterrupt:
        requeue_interrupted(trial)   # the rerun resumes this slot from its checkpoint
        raise


def _run_trial(trial: optuna.Trial, params: Params, parent_run_id: str | None, threads: int | None) -> float:
    slot, config = trial_params(params, trial, threads)
    resume_name = f"search-slot-{slot:03d}"
    pruned: optuna.TrialPruned | None = None
    with StageRun("search", config, parent_run_id=parent_run_id, run_name=f"trial-{slot:03d}",
                  extra_tags={"optuna.slot": str(slot), "optuna.trial_number": str(trial.number)}) as run:
        try:
            trained = finetune(config, paths.PRETRAINED, resume_name=resume_name, label=f"trial {slot}",
                               hooks=[PruningHook(trial, params.search.metric), *run.training_hooks()])
        except optuna.TrialPruned as err:
            pruned = err
            run.set_tags({"optuna.state": "PRUNED"})
            paths.resume_checkpoint(resume_name).unlink(missing_ok=True)
        else:
            metrics = summary_metrics(trained.result)
            run.log_metrics({f"final/{k}": v for k, v in metrics.items()}, step=len(trained.result.history))
            run.set_tags({"optuna.state": "COMPLETE"})
            save_model(trial_model_path(slot), trained.model, config.model, trained.info.input_shape,
                       trained.info.class_names, meta={"slot": slot, "params": trial.params,
                                                       "val/acc": metrics["val/acc"], "val/loss": metrics["val/loss"],
                                                       **model_meta(trained.heldout, config.selection.calibrate)})
            finish(trained)
    if pruned is not None:
        print(f"trial {slot}: {pruned}", file=sys.stderr)
        raise pruned
    value = metrics[params.search.metric]
    print(f"trial {slot}: {params.search.metric}={value:.4f} val/acc={metrics['val/acc']:.4f} "
          f"params={trial.params}", file=sys.stderr)
    return value
