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
    from trainlab import paths
    from trainlab.params_record import check_upstream, load_stage_params
    from trainlab.data import task_info
    from trainlab.dvc_metrics import headline
    from trainlab.ensemble.assemble import build_ensemble
    from trainlab.io import require_writable, write_json
    from trainlab.models import write_manifest
    from trainlab.serving import served_spec
    from trainlab.tracking import StageRun
    from trainlab.training import data_hashes

    params, ran_with = load_stage_params("ensemble", params_path)
    check_upstream("ensemble")   # the models it combines were made with the params dvc.lock records
    require_writable(*paths.output_folders("ensemble"))   # before the work, not after it
    with StageRun("ensemble", params, inputs=data_hashes(), params_file=params_path) as run:
        built = build_ensemble(params)
        ran_with.check_unchanged(written=[paths.ENSEMBLE])   # build_ensemble saved the model: removed if it stops
        write_manifest("ensemble", [paths.ENSEMBLE], params=ran_with.values)   # what evaluate checks it against
        write_json(paths.stage_reports("ensemble") / "metrics.json", headline("ensemble", built.metrics))
        write_json(paths.stage_reports("ensemble") / "details.json", built.metrics)
        write_json(paths.stage_reports("ensemble") / "members.json", built.members)
        run.log_metrics(built.metrics, step=0)
        run.log_dict({"members": built.members}, "ensemble/members.json")
        if params.tracking.log_models:
            run.log_artifact(paths.ENSEMBLE, "model")   # the DVC output byte for byte
            run.log_model(served_spec(built.ensemble, task_info(paths.PREPARED, "target"), "target",
                                      built.metrics["calibration/temperature"], heldout=built.heldout,
                                      level=params.selection.interval), "ensemble")
    for key, value in built.metrics.items():   # counts as counts (members: 2), scores to 4 places
        click.echo(f"{key}: {value}" if isinstance(value, int) else f"{key}: {value:.4f}")
    finished(run, "ensemble")
