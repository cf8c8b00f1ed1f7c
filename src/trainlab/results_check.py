"""Do a rerun's final test scores agree with committed ones, within what another CPU explains?

The reproducibility contract (docs/reproducibility.md, "Results on another CPU"): the same commit, CPU type,
thread count and torch build rerun bit-identical. On another CPU the kernels torch, MKL and
oneDNN pick differ in the last bits of every float, training on many steps carries that into
every weight, and a search or an ensemble selection may take the other branch of a near-tie.
Intermediate figures (a pretraining loss, a trial's value) may then differ by more than their
own noise; the final test scores agree within

- an accuracy (0..1): 3 test samples or 0.5 point, whichever is larger
  (a 1,000-sample split: 0.005; a 100-sample one: 0.03);
- an R² (regression): 0.02, the margin the project holds a table model to against its baseline.

`compare` applies that to the champion's and every final model's test score in
reports/evaluate/details.json (at commits from before details.json, in metrics.json); `trainlab check-results` runs it against a git revision.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from trainlab.errors import DataError
from trainlab.paths import REPORTS

METRICS = REPORTS / "evaluate" / "details.json"
# Where commits before details.json kept the same keys (evaluate's metrics.json then held every score).
LEGACY_METRICS = REPORTS / "evaluate" / "metrics.json"

CROSS_CPU_SCORE_SAMPLES = 3      # test samples
CROSS_CPU_SCORE_POINTS = 0.5     # percentage points
CROSS_CPU_R2 = 0.02
# The final test scores the contract covers: champion/<score> and test/<score>/<model>.
SCORES = ("acc", "r2")


def accuracy_tolerance(test_samples: int) -> float:
    """How far a final test accuracy (0..1) may move between CPUs: 3 samples or 0.5 point."""
    if test_samples <= 0:
        raise ValueError(f"test_samples must be positive, got {test_samples}")
    return max(CROSS_CPU_SCORE_SAMPLES / test_samples, CROSS_CPU_SCORE_POINTS / 100)


def tolerance(key: str, test_samples: int) -> float:
    """The allowed gap for the metric `key` (e.g. test/acc/ensemble, champion/r2)."""
    return CROSS_CPU_R2 if score_of(key) == "r2" else accuracy_tolerance(test_samples)


def score_of(key: str) -> str | None:
    """The score a metrics key holds if the contract covers it (acc, r2), else None."""
    parts = key.split("/")
    if len(parts) == 2 and parts[0] == "champion" and parts[1] in SCORES:
        return parts[1]
    if len(parts) == 3 and parts[0] == "test" and parts[1] in SCORES:
        return parts[1]
    return None


@dataclass(frozen=True)
class ScoreGap:
    key: str
    committed: float | None
    fresh: float | None
    allowed: float

    @property
    def ok(self) -> bool:
        return (self.committed is not None and self.fresh is not None
                and abs(self.fresh - self.committed) <= self.allowed)

    def line(self) -> str:
        both = self.committed is not None and self.fresh is not None
        gap = f"{self.fresh - self.committed:+.4f}" if both else ""
        return (f"{self.key:<34} {_shown(self.committed):>9} {_shown(self.fresh):>9} {gap:>8} "
                f"{'<= ' + format(self.allowed, '.4f'):>9}  {'ok' if self.ok else 'OUTSIDE'}")


def _shown(value: float | None) -> str:
    return "missing" if value is None else f"{value:.4f}"


def compare(fresh: Mapping[str, float], committed: Mapping[str, float], test_samples: int) -> list[ScoreGap]:
    """Each covered score of either file: committed, fresh and the allowed gap."""
    keys = sorted(k for k in {*fresh, *committed} if score_of(k))
    return [ScoreGap(k, committed.get(k), fresh.get(k), tolerance(k, test_samples)) for k in keys]


def fresh_scores(path: Path = METRICS) -> dict:
    """This run's metrics file (one line if there is none yet)."""
    if not path.exists():
        raise DataError(f"{path} not found: run the pipeline first (dvc repro)")
    return scores_in(path.read_text(), str(path))


def committed_scores(revision: str, path: Path = METRICS) -> dict:
    """The scores file as committed at `revision` (one line if git has none)."""
    shown = _git_show(revision, path)
    if shown.returncode != 0 and path == METRICS and _git_show(revision, LEGACY_METRICS).returncode == 0:
        path, shown = LEGACY_METRICS, _git_show(revision, LEGACY_METRICS)
    if shown.returncode != 0:
        reason = (shown.stderr.strip().splitlines() or ["git failed"])[-1]
        raise DataError(f"--against {revision}: no committed {path} to compare with ({reason})")
    return scores_in(shown.stdout, f"{revision}:{path.as_posix()}")


def _git_show(revision: str, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "show", f"{revision}:{path.as_posix()}"], capture_output=True, text=True)


def scores_in(text: str, where: str) -> dict:
    """A metrics file's {key: value} (one line naming `where` if it is not a JSON object)."""
    try:
        scores = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: not JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(scores, dict):
        raise DataError(f"{where}: expected a JSON object of metrics")
    return scores
