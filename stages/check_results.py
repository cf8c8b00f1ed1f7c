"""`trainlab check-results`: compare this run's final test scores with a commit's, within the cross-CPU tolerance.

After `dvc repro` on a teammate's machine (another CPU type, thread count or torch build),
dvc.lock and the reports change in their last digits; this says whether the results still
agree with the committed ones: every final test accuracy within 3 test samples or 0.5
point (whichever is larger), every R² within 0.02 (README, "Results on another CPU").
Intermediate figures (pretraining loss, search values) are not compared: they may differ
more. Exit 0 if all agree, 1 if any is outside (each listed), 2 if there is nothing to compare.
"""

import json
import subprocess
import sys

import click

from trainlab.paths import REPORTS

METRICS = REPORTS / "evaluate" / "metrics.json"


@click.command(help=__doc__)
@click.option("--against", "revision", default="HEAD", show_default=True,
              help="The git revision whose committed reports/evaluate/metrics.json is the reference.")
def command(revision: str) -> None:
    from trainlab import paths
    from trainlab.data import load_split
    from trainlab.errors import DataError
    from trainlab.results_check import compare

    if not METRICS.exists():
        raise DataError(f"{METRICS} not found: run the pipeline first (dvc repro)")
    fresh = scores_in(METRICS.read_text(), str(METRICS))
    committed = scores_in(committed_text(revision), f"{revision}:{METRICS.as_posix()}")
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


def committed_text(revision: str) -> str:
    """reports/evaluate/metrics.json as committed at `revision` (one line if git has none)."""
    from trainlab.errors import DataError

    shown = subprocess.run(["git", "show", f"{revision}:{METRICS.as_posix()}"], capture_output=True, text=True)
    if shown.returncode != 0:
        reason = (shown.stderr.strip().splitlines() or ["git failed"])[-1]
        raise DataError(f"--against {revision}: no committed {METRICS} to compare with ({reason})")
    return shown.stdout


def scores_in(text: str, where: str) -> dict:
    """A metrics file's {key: value} (one line naming `where` if it is not a JSON object)."""
    from trainlab.errors import DataError

    try:
        scores = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: not JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(scores, dict):
        raise DataError(f"{where}: expected a JSON object of metrics")
    return scores
