"""`trainlab ensemble`: combine the top-k search models (and the finetuned one) -> models/ensemble.pt.

ensemble.method: soft_vote (mean probability), hard_vote (majority, ties to the higher
mean probability) or weighted (weights fitted on the validation split only).
"""

import click

from .options import params_option


@click.command(help=__doc__)
@params_option
def command(params_path: str) -> None:
    from .report import finished, started

    started("ensemble")   # before the imports below, which take seconds
    from trainlab.ensemble.stage import run_ensemble
    from trainlab.io import require_writable
    from trainlab.params_record import check_upstream, load_stage_params
    from trainlab.stage_registry import output_folders

    params, ran_with = load_stage_params("ensemble", params_path)
    check_upstream("ensemble")   # the models it combines were made with the params dvc.lock records
    require_writable(*output_folders("ensemble"))   # before the work, not after it
    finished(run_ensemble(params, params_path, ran_with), "ensemble")
