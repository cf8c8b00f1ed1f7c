"""`trainlab prepare`: build data/prepared (target train/val/test, source train/val, manifest)."""

import click

from .options import params_option


@click.command(help=__doc__)
@params_option
def command(params_path: str) -> None:
    from .report import finished, started

    started("prepare")   # before the imports below, which take seconds
    from trainlab import paths
    from trainlab.config import load_params, params_hash
    from trainlab.data.build import prepare, summarize
    from trainlab.io import write_json
    from trainlab.tracking import StageRun

    params = load_params(params_path)
    with StageRun("prepare", params, params_file=params_path) as run:
        manifest = prepare(params.data, paths.PREPARED, params_hash(params.data))
        for note in manifest.get("notes", []):
            click.echo(note)
        metrics = summarize(manifest)
        write_json(paths.stage_reports("prepare") / "metrics.json", metrics)
        run.log_metrics(metrics, step=0)
        run.log_artifact(paths.MANIFEST)
    for key, value in metrics.items():
        click.echo(f"{key}: {value}")
    finished(run, "prepare")
