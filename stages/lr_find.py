"""`trainlab lr-find [pretrain|finetune]`: measure a learning rate without training.

Runs the learning-rate range test that `optimizer.lr: auto` runs before the stage trains
(the stage's own model, frozen blocks, batch size and data), prints the rate it would
choose and draws the loss against the rate into reports/lr-find/<stage>/lr_range.png
(git-ignored; also an MLflow run `lr-find <stage>`). No stage output changes. finetune
needs models/pretrained.pt (run `dvc repro pretrain` first); both need prepare's data.
"""

import click

from .options import params_option


@click.command(help=__doc__)
@click.argument("stage", type=click.Choice(["pretrain", "finetune"]), default="finetune")
@params_option
def command(stage: str, params_path: str) -> None:
    from trainlab.config import load_params
    from trainlab.lr_find import find_lr, record_lr_find

    params = load_params(params_path)
    test = find_lr(params, stage)
    files = record_lr_find(params, stage, test)
    if test.chosen is None:
        from trainlab.training.lr_choice import never_fell_line

        click.echo(never_fell_line(stage, test))
    else:
        click.echo(f"{stage}: lr: auto would choose {test.chosen:.3g} (steepest descent at {test.steepest:.3g}; "
                   f"{test.steps_run} steps in {test.seconds:.1f} s, {test.stop}); plot: {files[1]}")
