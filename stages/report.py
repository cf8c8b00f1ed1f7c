"""What every stage says at its edges: what it starts, at once, and where its results went.

`started` runs before the stage's heavy imports (torch, MLflow, Optuna take seconds), so
the terminal is never silent while they load. `finished` names the stage's MLflow run
(with the address to open it) and the files it wrote. Both go to stdout, beside the
stage's results: stderr stays the one `error:` line of a stage that fails.
"""

from __future__ import annotations

import os

import click

# Set by trainlab.launch in the processes it starts for trainer.devices > 1 (STORE_ENV of
# engine/runtime.py, which imports torch): their parent has already said what it starts.
RELAUNCHED = "TRAINLAB_DIST_STORE"


def started(stage: str) -> None:
    """'[pretrain] starting: Train the model ...', before anything slow."""
    from trainlab.stage_registry import STAGES   # paths only: no torch, no MLflow

    # Once: not again in each process trainer.devices relaunches, nor on torchrun's other ranks.
    if os.environ.get("RANK", "0") == "0" and RELAUNCHED not in os.environ:
        click.echo(f"[{stage}] starting: {STAGES[stage].help}")   # click.echo flushes: shown at once


def finished(run, stage: str) -> None:
    """The stage's MLflow run (id and link) and the outputs it wrote; nothing on
    DDP ranks other than 0 (their NullRun has no run id)."""
    from trainlab.stage_registry import STAGES

    if run.run_id is None:
        return
    click.echo(f"[{stage}] MLflow run {run.run_id}: {run.link()}")
    wrote = [f"{path}/" if path.is_dir() else str(path) for path in STAGES[stage].outputs if path.exists()]
    click.echo(f"[{stage}] wrote: {', '.join(wrote)}")
