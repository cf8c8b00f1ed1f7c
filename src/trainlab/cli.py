"""The `trainlab` command: a Click group whose subcommands live in the project's `stages/`.

`stages/` is a folder of the project, not an installed package: the subcommands are
loaded from the `stages/` beside the `src/` this `trainlab` package was imported from,
so a checkout (a `trainlab rerun` worktree of an older commit included) always runs its
own stage commands with its own library. They are imported only when invoked, so
`trainlab --help` answers without importing torch or mlflow. A `UserError` becomes one
line on stderr and its exit code (2 for bad input); anything else keeps its traceback,
since it is our bug.
"""

from __future__ import annotations

import atexit
import importlib
import importlib.util
import os
import signal
import sys
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import click

from trainlab import __version__
from trainlab.stage_registry import STAGES

# The module name the project's stages/ folder is loaded under (it is never installed).
STAGES_PACKAGE = "trainlab_stages"
# The checkout this package was imported from: <checkout>/src/trainlab/cli.py.
CHECKOUT = Path(__file__).resolve().parents[2]

# name -> the one-line help `trainlab --help` shows (trainlab.stage_registry: the stages' table)
COMMANDS = {name: stage.help for name, stage in STAGES.items()}


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that subcommand runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        load_stages_package()
        return importlib.import_module(f"{STAGES_PACKAGE}.{STAGES[name].module}").command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The group's help lists the one-liners above instead of importing every stage.
        with formatter.section("Commands"):
            formatter.write_dl(list(COMMANDS.items()))

    def invoke(self, ctx: click.Context):
        from trainlab.errors import UserError
        from trainlab.processes import raise_if_interrupted

        try:
            result = super().invoke(ctx)
            raise_if_interrupted()   # a Ctrl-C whose KeyboardInterrupt a finalizer swallowed
            return result
        except UserError as err:
            click.echo(f"error: {err}", err=True)
            ctx.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo(interrupted_line(ctx.invoked_subcommand), err=True)
            ctx.exit(130)


def interrupted_line(command: str | None) -> str:
    """What a Ctrl-C left: a checkpoint to resume from only where the command keeps one."""
    if command in STAGES and STAGES[command].resumable:
        return "interrupted: the last checkpoint is kept; rerun to resume"
    if command in STAGES and STAGES[command].atomic:
        return f"interrupted: {command} keeps no checkpoint and left no file half-written; rerun it to start again"
    return "interrupted"


def load_stages_package() -> ModuleType:
    """The project's stages/ folder as the package `trainlab_stages` (loaded once per process)."""
    from trainlab.errors import UserError

    if STAGES_PACKAGE in sys.modules:
        return sys.modules[STAGES_PACKAGE]
    # The checkout of this very package first (an editable install, or PYTHONPATH=<checkout>/src
    # as `trainlab rerun` sets it); else the project in the working directory.
    folder = next((f for f in (CHECKOUT / "stages", Path.cwd() / "stages") if (f / "__init__.py").is_file()), None)
    if folder is None:
        raise UserError(f"no stages/ folder with the stage commands beside {CHECKOUT / 'src'} or in {Path.cwd()}: "
                        "run trainlab from its project checkout, installed with `pip install -e .`")
    spec = importlib.util.spec_from_file_location(STAGES_PACKAGE, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[STAGES_PACKAGE] = package
    spec.loader.exec_module(package)
    return package


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
    from trainlab.processes import interrupt, quiet_lost_interrupts

    sys.unraisablehook = quiet_lost_interrupts(sys.unraisablehook)
    signal.signal(signal.SIGTERM, interrupt)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:   # not where the shell ignores it (`&`)
        signal.signal(signal.SIGINT, interrupt)
    try:
        cli(prog_name="trainlab")
    except SystemExit as done:   # Click ends every command this way, with its exit status
        exit_now(done.code)


def exit_now(code: int | str | None) -> NoReturn:
    """Exit with `code` without tearing the interpreter down.

    Freeing torch's, MLflow's and pandas' thousands of module objects one by one took a
    finished stage 1.4-2 s (bench/RESULTS.md, section 5): every stage of `dvc repro` and
    every search paid it. Everything an exit must do still happens, done by the interpreter's
    own exit that this SystemExit starts: it waits for any non-daemon thread, runs the
    atexit handlers (logging, MLflow, multiprocessing, temporary folders), and only then,
    from the last of them (`_end_without_teardown`), is the process ended, stdout and stderr
    flushed; every file trainlab writes is closed by a `with` block before this.
    """
    global _fast_exit_code
    if code is None:
        code = 0
    elif not isinstance(code, int):   # SystemExit("message"): Python prints it and exits 1
        print(code, file=sys.stderr)
        code = 1
    _fast_exit_code = code
    raise SystemExit(code)


# exit_now's exit status, for `_end_without_teardown`; None: an ordinary exit, with the teardown.
_fast_exit_code: int | None = None


def _end_without_teardown() -> None:
    """After exit_now, end the process once the interpreter has run every other atexit handler.

    The interpreter runs them last-registered first, so this one, registered when trainlab.cli
    is imported (first thing in `trainlab` and `python -m trainlab`, before any library that
    registers one: torch, MLflow, logging, multiprocessing, tempfile), runs after all of them;
    the module teardown that would follow them is what is skipped.
    """
    if _fast_exit_code is None:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):   # a closed pipe (`trainlab ... | head`): nothing to save
            pass
    os._exit(_fast_exit_code)


atexit.register(_end_without_teardown)

