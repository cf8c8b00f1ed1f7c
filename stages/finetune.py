"""`trainlab finetune`: transfer models/pretrained.pt to the target task -> models/finetuned.pt.

New head for the target classes, the blocks in finetune.freeze frozen (optionally
unfrozen one by one every finetune.unfreeze_every epochs), the backbone at
finetune.backbone_lr_scale x the head's lr. With finetune.compare_scratch it also
trains the same model from random weights (transfer/gain = finetuned - scratch on
val), with finetune.linear_probe only a new head on frozen features, and with
finetune.linear_baseline a linear model on the raw inputs.
"""

import sys

import click

from .options import params_option


@click.command(help=__doc__)
@params_option
def command(params_path: str) -> None:
    from .report import finished, started

    started("finetune")   # before the imports below, which take seconds
    from trainlab.io import require_writable
    from trainlab.launch import relaunch_if_needed
    from trainlab.params_record import check_upstream, load_stage_params
    from trainlab.stage_registry import output_folders
    from trainlab.training.stage_runs import run_finetune

    params, ran_with = load_stage_params("finetune", params_path)   # ran_with: checked before each write
    check_upstream("finetune")   # prepare's and pretrain's outputs were made with what dvc.lock records
    require_writable(*output_folders("finetune"))   # before the work, not after it
    exit_code = relaunch_if_needed(params.trainer, ["finetune", "--params", params_path])
    if exit_code is not None:
        sys.exit(exit_code)
    finished(run_finetune(params, params_path, ran_with), "finetune")
