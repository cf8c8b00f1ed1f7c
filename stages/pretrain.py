"""`trainlab pretrain`: train the configured model on the source corpus -> models/pretrained.pt.

Reads the seed, model, trainer, pretrain and tracking sections. With trainer.devices > 1
the same command reruns under torchrun (DDP); a killed run resumes from its last
checkpoint in .trainlab/resume when rerun.
"""

import sys

import click

from .options import params_option


@click.command(help=__doc__)
@params_option
def command(params_path: str) -> None:
    from .report import finished, started

    started("pretrain")   # before the imports below, which take seconds
    from trainlab import paths
    from trainlab.params_record import check_upstream, load_stage_params
    from trainlab.io import require_writable
    from trainlab.engine import setup_runtime, teardown_runtime
    from trainlab.launch import relaunch_if_needed
    from trainlab.models import write_manifest
    from trainlab.tracking import open_stage_run
    from trainlab.errors import TrainingDiverged
    from trainlab.outputs import publish_divergence, publish_training
    from trainlab.training import data_hashes, finish, train_task

    params, ran_with = load_stage_params("pretrain", params_path)   # ran_with: checked before writing
    check_upstream("pretrain")   # prepare's outputs were made with the params dvc.lock records
    require_writable(*paths.output_folders("pretrain"))   # before the work, not after it
    exit_code = relaunch_if_needed(params.trainer, ["pretrain", "--params", params_path])
    if exit_code is not None:
        sys.exit(exit_code)
    runtime = setup_runtime(params.trainer)
    try:
        with open_stage_run("pretrain", params, runtime.is_main, inputs=data_hashes(),
                            params_file=params_path) as run:
            try:
                trained = train_task(params, params.pretrain, "source", resume_name="pretrain",
                                     hooks=run.training_hooks(), runtime=runtime, label="pretrain")
            except TrainingDiverged as err:
                publish_divergence(run, err)
                raise
            if runtime.is_main:
                ran_with.check_unchanged()
                publish_training(run, trained, params, paths.PRETRAINED, paths.stage_reports("pretrain"))
                # What finetune and search check it against, with the params it was made with.
                write_manifest("pretrain", [paths.PRETRAINED], params=ran_with.values)
                finish(trained)
        finished(run, "pretrain")
    finally:
        teardown_runtime()
