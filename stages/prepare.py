"""`trainlab prepare`: build data/prepared (target train/val/test, source train/val, manifest)."""

import click

from .options import params_option


@click.command(help=__doc__)
@params_option
def command(params_path: str) -> None:
    from .report import finished, started

    started("prepare")   # before the imports below, which take seconds
    from trainlab import paths
    from trainlab.config import params_hash
    from trainlab.data.build import prepare, summarize
    from trainlab.dvc_metrics import headline
    from trainlab.io import write_json
    from trainlab.params_record import load_stage_params
    from trainlab.tracking import StageRun

    params, ran_with = load_stage_params("prepare", params_path)   # ran_with: checked before writing
    with StageRun("prepare", params, params_file=params_path) as run:
        manifest = prepare(params.data, paths.PREPARED, params_hash(params.data), ran_with)
        for note in manifest.get("notes", []):
            click.echo(note)
        metrics = summarize(manifest)
        # Every count is in the prepared data's manifest.json; DVC shows the split sizes.
        write_json(paths.stage_reports("prepare") / "metrics.json", headline("prepare", metrics))
        run.log_metrics(metrics, step=0)
        run.log_artifact(paths.MANIFEST)
    for key, value in metrics.items():
        click.echo(f"{key}: {value}")
    finished(run, "prepare")
