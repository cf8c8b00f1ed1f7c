"""The two training stages, pretrain and finetune, from loaded params to written outputs.

The stage commands in `stages/` stay thin (read params, check upstream, relaunch under
DDP, say what was written); what happens in between is here: the runtime, the MLflow
run, the training(s), and the one path every output is written through
(`trainlab.training.outputs`). On DDP ranks other than 0 the run is a no-op stand-in and
nothing is written.
"""

from __future__ import annotations

from typing import Callable

from trainlab import paths
from trainlab.config import Params
from trainlab.data import data_hashes
from trainlab.engine import Runtime, setup_runtime, teardown_runtime
from trainlab.errors import TrainingDiverged
from trainlab.models import write_manifest
from trainlab.params_record import ParamsRecord
from trainlab.tracking import NullRun, StageRun, open_stage_run
from trainlab.training.fit import TrainedModel, TrainRequest, finish
from trainlab.training.imported_stage import run_import
from trainlab.training.outputs import publish_divergence, publish_training
from trainlab.training.task import TaskData, load_task, train_source
from trainlab.training.tracking_hook import tracking_hooks
from trainlab.training.transfer import (finetune, finetune_request, linear_params, linear_probe, no_gain_note,
                                        train_linear, train_scratch, transfer_metrics)

Run = StageRun | NullRun


def run_pretrain(params: Params, params_path: str, ran_with: ParamsRecord) -> Run:
    """Train on the source task -> models/pretrained.pt and its manifest; returns the stage's run.
    With `pretrain.from` set the network is imported from that file instead (training.imported_stage)."""
    runtime = setup_runtime(params.trainer)
    try:
        if params.pretrain.imported() is not None:
            return run_import(params, params_path, ran_with, runtime.is_main)
        with open_stage_run("pretrain", params, runtime.is_main, inputs=data_hashes(paths.PREPARED),
                            params_file=params_path) as run:
            request = TrainRequest(params, params.pretrain, "pretrain", "pretrain", runtime, tuple(tracking_hooks(run)))
            trained = _diagnosed(run, lambda: train_source(request))
            if runtime.is_main:
                ran_with.check_unchanged()
                publish_training(run, trained, params, paths.PRETRAINED, paths.stage_reports("pretrain"))
                # What finetune and search check it against, with the params it was made with.
                write_manifest("pretrain", [paths.PRETRAINED], params=ran_with.values)
                finish(trained)
        return run
    finally:
        teardown_runtime()


def run_finetune(params: Params, params_path: str, ran_with: ParamsRecord) -> Run:
    """Fine-tune the pretrained backbone -> models/finetuned.pt, and the baselines the params
    ask for (scratch, linear probe, linear model), each in a child run; returns the stage's run."""
    runtime = setup_runtime(params.trainer)
    data = load_task("target", params)
    try:
        with open_stage_run("finetune", params, runtime.is_main, inputs=data_hashes(paths.PREPARED),
                            params_file=params_path) as run:
            request = finetune_request(params, runtime=runtime, hooks=tracking_hooks(run))
            tuned = _diagnosed(run, lambda: finetune(request, paths.PRETRAINED, data))
            baselines = _baselines(run, request, data, runtime, ran_with)
            if runtime.is_main:
                _publish_finetune(run, params, tuned, baselines, ran_with)
        return run
    finally:
        teardown_runtime()


def _baselines(run: Run, request: TrainRequest, data: TaskData, runtime: Runtime,
               ran_with: ParamsRecord) -> dict[str, TrainedModel]:
    """Each baseline trained in its own child run (with the params it trains with) and published there."""
    params, cfg = request.params, request.params.finetune
    wanted = [("scratch", cfg.compare_scratch, "finetune scratch baseline", train_scratch, params, paths.SCRATCH),
              ("probe", cfg.linear_probe, "finetune linear probe",
               lambda r, data: linear_probe(r, paths.PRETRAINED, data), params, None),
              ("linear", cfg.linear_baseline, "finetune linear baseline", train_linear, linear_params(params),
               paths.LINEAR)]
    baselines: dict[str, TrainedModel] = {}
    for name, enabled, title, train, model_params, model_path in wanted:
        if not enabled:
            continue
        with run.child(title, model_params) as child:
            # Diagnosed on the baseline's run, not also its parent's.
            baselines[name] = _diagnosed(child, lambda: train(request.derive(hooks=tuple(tracking_hooks(child))),
                                                              data=data))
            if runtime.is_main:
                ran_with.check_unchanged(written=[paths.BASELINES])   # earlier baselines' files
                publish_training(child, baselines[name], model_params, model_path, paths.BASELINES / name)
    return baselines


def _publish_finetune(run: Run, params: Params, tuned: TrainedModel, baselines: dict[str, TrainedModel],
                      ran_with: ParamsRecord) -> None:
    ran_with.check_unchanged(written=[paths.BASELINES])
    paths.BASELINES.mkdir(parents=True, exist_ok=True)   # a DVC output even when empty
    comparison = transfer_metrics(tuned, baselines)
    publish_training(run, tuned, params, paths.FINETUNED, paths.stage_reports("finetune"), extra_metrics=comparison)
    # What ensemble and evaluate check these files against: this run's, no older ones.
    write_manifest("finetune", [paths.FINETUNED, *(paths.BASELINE_MODELS[name] for name in baselines
                                                   if name in paths.BASELINE_MODELS)], params=ran_with.values)
    verdict = no_gain_note(comparison)
    if verdict:
        print(verdict, flush=True)
    for trained in (tuned, *baselines.values()):
        finish(trained)


def _diagnosed(run: Run, train: Callable[[], TrainedModel]) -> TrainedModel:
    """`train()`, a divergence diagnosed on `run` before it propagates (the stage exits 3)."""
    try:
        return train()
    except TrainingDiverged as err:
        publish_divergence(run, err)
        raise
