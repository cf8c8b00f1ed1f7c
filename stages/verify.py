"""`trainlab verify`: check that dvc.lock records the params each stage's outputs were made with.

DVC reads params.yaml for a stage's entry in dvc.lock only once the stage's command has
exited, so an edit made in between went into dvc.lock as what the stage had used, and
`dvc status` saw nothing to do. Each stage records in its outputs the params it ran with;
this compares every record with the stage's dvc.lock entry (each later stage does the
same for its upstream stages before it starts). One line per stage; exit 1 if any
differs: the line names the key, both values and the command that reruns the stage.
"""

import sys

import click


@click.command(help=__doc__)
def command() -> None:
    from trainlab import paths
    from trainlab.params_record import verify

    if not paths.DVC_LOCK.is_file():
        click.echo(f"{paths.DVC_LOCK}: not found: no stage has run under DVC yet, nothing to check")
        return
    verdicts = verify()
    for verdict in verdicts:
        click.echo(f"{verdict.stage}: {verdict.says}")
    if not all(verdict.ok for verdict in verdicts):
        sys.exit(1)
