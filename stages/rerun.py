"""`trainlab rerun RUN_ID`: reproduce a recorded stage run and compare its metrics exactly.

Checks out the run's git commit in a temporary worktree, writes the run's resolved
params as params.yaml and runs `dvc repro <stage>` there, logging to the same
tracking store (new runs are tagged trainlab.rerun_of=RUN_ID). Then compares the
latest value of every metric, timing metrics excluded. Exit code 0 when all match,
1 when any differs. The model registry is left alone (evaluate's registration is
switched off in the rerun) unless --register is given. With --in-place, reruns the stage in this checkout instead, which
must be clean and at the recorded commit.
"""

import sys

import click


@click.command(help=__doc__)
@click.argument("run_id")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or the project's mlflow.db).")
@click.option("--in-place", is_flag=True, default=False,
              help="Rerun only the stage, in this checkout (clean, at the recorded commit), without a worktree.")
@click.option("--register", is_flag=True, default=False,
              help="Let a rerun of evaluate register its model as a new version (off by default); it "
                   "takes the alias only by evaluate.promote's rule, like any evaluate.")
def command(run_id: str, tracking_uri: str | None, in_place: bool, register: bool) -> None:
    from trainlab.tracking.history import client_for
    from trainlab.rerun import rerun

    result = rerun(client_for(tracking_uri), run_id, in_place=in_place, register=register,
                   warn=lambda line: click.echo(line, err=True))
    if not result.differences:
        click.echo(f"identical: {result.compared} metrics match exactly")
        sys.exit(0)
    click.echo(f"different: {len(result.differences)} of {result.compared} metrics differ from run {run_id}")
    for diff in result.differences:
        click.echo(f"  {diff.key}: original {diff.original!r}, rerun {diff.rerun!r}")
    sys.exit(1)
