"""`trainlab pretrain`: train the configured model on the source corpus -> models/pretrained.pt.

With `pretrain.from` naming a weights file (a ResNet-18/34 in torchvision/timm layout, or
another trainlab project's model file) the network is imported from it instead.

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
    from trainlab.io import require_writable
    from trainlab.launch import relaunch_if_needed
    from trainlab.params_record import check_upstream, load_stage_params
    from trainlab.stage_registry import output_folders
    from trainlab.training.stage_runs import run_pretrain

    params, ran_with = load_stage_params("pretrain", params_path)   # ran_with: checked before writing
    check_upstream("pretrain")   # prepare's outputs were made with the params dvc.lock records
    require_writable(*output_folders("pretrain"))   # before the work, not after it
    exit_code = relaunch_if_needed(params.trainer, ["pretrain", "--params", params_path])
    if exit_code is not None:
        sys.exit(exit_code)
    finished(run_pretrain(params, params_path, ran_with), "pretrain")
