"""`trainlab promote VERSION`: point evaluate.alias (`champion`) at a registered version by hand.

For a version evaluate registered as `challenger` (held out on other data, or not better
on the same data) that should be served anyway. The version is tagged
`trainlab.promotion = promoted by hand`; the alias moves under the same lock evaluate
takes, so it never races with an evaluate that is registering. Model name, alias and
tracking store come from params.yaml (evaluate.model_name, evaluate.alias, tracking).
"""

import click

from .options import params_option


@click.command(help=__doc__)
@click.argument("version")
@params_option
def command(version: str, params_path: str) -> None:
    from trainlab.config import load_params
    from trainlab.tracking.history import client_for
    from trainlab.tracking.promotion import promote
    from trainlab.tracking.run import resolve_uri
    from trainlab.tracking.store_location import project_root

    params = load_params(params_path)
    name, alias, uri = params.evaluate.model_name, params.evaluate.alias, resolve_uri(params)
    before = promote(client_for(uri), uri, project_root(), name, version.lstrip("v"), alias)
    was = f" (was v{before})" if before and before != version.lstrip("v") else ""
    click.echo(f"{name} v{version.lstrip('v')} is now @{alias}{was}: models:/{name}@{alias}")
