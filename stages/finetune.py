"""`trainlab finetune`: transfer models/pretrained.pt to the target task -> models/finetuned.pt.

New head for the target classes, the blocks in finetune.freeze frozen (optionally
unfrozen one by one every finetune.unfreeze_every epochs), the backbone at
finetune.backbone_lr_scale x the head's lr. With finetune.compare_scratch it also
trains the same model from random weights (transfer/gain = finetuned - scratch on
val), with finetune.linear_probe only a new head on frozen features, and with
finetune.linear_baseline a linear model on the raw inputs.
"""

import sys
from functools import partial

import click

from .options import params_option


@click.command(help=__doc__)
@params_option
def command(params_path: str) -> None:
    from .report import finished, started

    started("finetune")   # before the imports below, which take seconds
    from trainlab import paths
    from trainlab.params_record import check_upstream, load_stage_params
    from trainlab.io import require_writable
    from trainlab.engine import setup_runtime, teardown_runtime
    from trainlab.launch import relaunch_if_needed
    from trainlab.models import write_manifest
    from trainlab.tracking import open_stage_run
    from trainlab.errors import TrainingDiverged
    from trainlab.outputs import publish_divergence, publish_training
    from trainlab.training import data_hashes, finish, load_task
    from trainlab.transfer import (finetune, linear_params, linear_probe, no_gain_note, train_linear,
                                   train_scratch, transfer_metrics)

    params, ran_with = load_stage_params("finetune", params_path)   # ran_with: checked before each write
    check_upstream("finetune")   # prepare's and pretrain's outputs were made with what dvc.lock records
    require_writable(*paths.output_folders("finetune"))   # before the work, not after it
    exit_code = relaunch_if_needed(params.trainer, ["finetune", "--params", params_path])
    if exit_code is not None:
        sys.exit(exit_code)
    runtime = setup_runtime(params.trainer)
    reports, data = paths.stage_reports("finetune"), load_task("target", params)
    try:
        with open_stage_run("finetune", params, runtime.is_main, inputs=data_hashes(),
                            params_file=params_path) as run:
            try:
                tuned = finetune(params, paths.PRETRAINED, hooks=run.training_hooks(), runtime=runtime, data=data)
            except TrainingDiverged as err:
                publish_divergence(run, err)
                raise
            baselines = {}

            def baseline(name: str, title: str, train, model_params, model_path) -> None:
                """Train one baseline in its own child run (with the params it trains with) and publish it."""
                with run.child(title, model_params) as child:
                    try:
                        baselines[name] = train(hooks=child.training_hooks(), runtime=runtime, data=data)
                    except TrainingDiverged as err:
                        publish_divergence(child, err)   # on the baseline's run, not also its parent's
                        raise
                    if runtime.is_main:
                        ran_with.check_unchanged(written=[paths.BASELINES])   # earlier baselines' files
                        publish_training(child, baselines[name], model_params, model_path, paths.BASELINES / name)

            if params.finetune.compare_scratch:
                baseline("scratch", "finetune scratch baseline", partial(train_scratch, params), params, paths.SCRATCH)
            if params.finetune.linear_probe:
                baseline("probe", "finetune linear probe", partial(linear_probe, params, paths.PRETRAINED),
                         params, None)
            if params.finetune.linear_baseline:
                baseline("linear", "finetune linear baseline", partial(train_linear, params),
                         linear_params(params), paths.LINEAR)
            if runtime.is_main:
                ran_with.check_unchanged(written=[paths.BASELINES])
                paths.BASELINES.mkdir(parents=True, exist_ok=True)   # a DVC output even when empty
                comparison = transfer_metrics(tuned, baselines)
                publish_training(run, tuned, params, paths.FINETUNED, reports, extra_metrics=comparison)
                # What ensemble and evaluate check these files against: this run's, no older ones.
                write_manifest("finetune", [paths.FINETUNED, *(paths.BASELINE_MODELS[name] for name in baselines
                                                               if name in paths.BASELINE_MODELS)],
                               params=ran_with.values)
                verdict = no_gain_note(comparison)
                if verdict:
                    click.echo(verdict)
                for trained in (tuned, *baselines.values()):
                    finish(trained)
        finished(run, "finetune")
    finally:
        teardown_runtime()

