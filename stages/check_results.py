"""`trainlab check-results`: compare this run's final test scores with a commit's, within the cross-CPU tolerance.

After `dvc repro` on a teammate's machine (another CPU type, thread count or torch build),
dvc.lock and the reports change in their last digits; this says whether the results still
agree with the committed ones: every final test accuracy within 3 test samples or 0.5
point (whichever is larger), every R² within 0.02 (docs/reproducibility.md, "Results on another CPU").
Intermediate figures (pretraining loss, search values) are not compared: they may differ
more. Exit 0 if all agree, 1 if any is outside (each listed), 2 if there is nothing to compare.
"""

import sys

import click


@click.command(help=__doc__)
@click.option("--against", "revision", default="HEAD", show_default=True,
              help="The git revision whose committed reports/evaluate/details.json is the reference.")
def command(revision: str) -> None:
    from trainlab import paths
    from trainlab.data import load_split
    from trainlab.errors import DataError
    from trainlab.results_check import METRICS, committed_scores, compare, fresh_scores

    fresh, committed = fresh_scores(), committed_scores(revision)
    test_samples = len(load_split(paths.PREPARED, "target", "test").y)
    gaps = compare(fresh, committed, test_samples)
    if not gaps:
        raise DataError(f"{METRICS}: no final test score (champion/acc, test/acc/..., test/r2/...) to compare")
    click.echo(f"{'score':<34} {revision[:9]:>9} {'this run':>9} {'gap':>8} {'allowed':>9}  ({test_samples} test samples)")
    for gap in gaps:
        click.echo(gap.line())
    outside = [g.key for g in gaps if not g.ok]
    if outside:
        click.echo(f"results differ from {revision} by more than another CPU explains: {', '.join(outside)}", err=True)
        sys.exit(1)
    click.echo(f"results agree with {revision} within the cross-CPU tolerance")
