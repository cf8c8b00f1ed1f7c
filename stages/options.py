"""Options every stage command shares."""

import click

from trainlab.paths import PARAMS

params_option = click.option(
    "--params", "params_path", default=str(PARAMS), show_default=True,
    type=click.Path(dir_okay=False), help="The params file to read (relative to the project root).",
)
