"""`trainlab diagnose RUN_ID`: diagnose the learning curves of any MLflow run.

Works on runs made by trainlab and by other tools (common metric names such as
loss/val_loss/accuracy are understood). With --log, the diagnosis is attached to the
run as diagnosis.md and a `trainlab.diagnosis` tag.
"""

import click


@click.command(help=__doc__)
@click.argument("run_id")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or the project's mlflow.db).")
@click.option("--num-classes", type=click.IntRange(min=2), default=None,
              help="Number of classes (chance level); read from the run's params when it has them.")
@click.option("--log/--no-log", default=False, help="Attach diagnosis.md and a tag to the run.")
def command(run_id: str, tracking_uri: str | None, num_classes: int | None, log: bool) -> None:
    from trainlab.errors import UserError
    from trainlab.training.curves import diagnose_training
    from trainlab.tracking.history import client_for, fetch_curves, get_run
    from trainlab.tracking.mlflow_fields import RUN_LABEL_TAG

    client = client_for(tracking_uri)
    run = get_run(client, run_id)
    curves = fetch_curves(client, run_id)
    if not curves:
        raise UserError(f"run {run_id}: has no metrics to diagnose")
    # A trainlab run's own name (its stage), not the table's (which adds the experiment).
    label = run.data.tags.get(RUN_LABEL_TAG, run.info.run_name)
    report = diagnose_training(curves, num_classes or _num_classes(run.data), label=label)
    click.echo(report.terminal)
    if log:
        client.log_text(run_id, report.markdown, "diagnosis.md")
        client.set_tag(run_id, "trainlab.diagnosis", ",".join(report.names))


def _num_classes(data) -> int | None:
    """trainlab tags its runs with data.num_classes; other tools may log a num_classes param."""
    value = data.tags.get("data.num_classes") or data.params.get("num_classes")
    return int(value) if value and str(value).isdigit() else None
