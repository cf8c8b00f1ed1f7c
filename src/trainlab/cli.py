"""The `trainlab` command: a Click group whose subcommands live in `stages/`.

Subcommands are imported only when invoked, so `trainlab --help` answers without
importing torch or mlflow. A `UserError` becomes one line on stderr and its exit
code (2 for bad input); anything else keeps its traceback, since it is our bug.
"""

from __future__ import annotations

import importlib
import signal

import click

from trainlab import __version__

# name -> (module:attribute, one-line help shown by `trainlab --help`)
COMMANDS = {
    "prepare": ("stages.prepare:command", "Build target/source splits and their manifest in data/prepared."),
    "pretrain": ("stages.pretrain:command", "Train the model on the source corpus -> models/pretrained.pt."),
    "finetune": ("stages.finetune:command", "Transfer the pretrained backbone to the target task."),
    "search": ("stages.search:command", "Hyperparameter search over the finetune config (Optuna)."),
    "ensemble": ("stages.ensemble:command", "Combine the top-k search models into one ensemble."),
    "evaluate": ("stages.evaluate:command", "Score every final model on the held-out test split."),
    "diagnose": ("stages.diagnose:command", "Diagnose the learning curves of any MLflow run."),
    "rerun": ("stages.rerun:command", "Rerun a recorded MLflow run and compare its metrics."),
}


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that subcommand runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attr = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The group's help lists the one-liners above instead of importing every stage.
        with formatter.section("Commands"):
            formatter.write_dl([(name, text) for name, (_, text) in COMMANDS.items()])

    def invoke(self, ctx: click.Context):
        from trainlab.errors import UserError

        try:
            return super().invoke(ctx)
        except UserError as err:
            click.echo(f"error: {err}", err=True)
            ctx.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted: the last checkpoint is kept; rerun to resume", err=True)
            ctx.exit(130)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="trainlab")
def cli() -> None:
    """trainlab: reproducible training experiments.

    Each command is one DVC stage (see dvc.yaml) and reads params.yaml from the
    current directory. Run the whole pipeline with `dvc repro`.
    """


def main() -> None:
    """Console-script entry point."""
    # SIGTERM (a CI timeout, `kill`) takes the same clean path as Ctrl-C: the MLflow run is
    # marked KILLED and the last checkpoint stays for the rerun.
    signal.signal(signal.SIGTERM, _interrupt)
    cli(prog_name="trainlab")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
