"""How much to trust a test score: 95% confidence intervals and paired tests between models.

With a few dozen test samples one sample moves accuracy by several points, so evaluate
gives every final model's test score an interval, and says when the champion is not
distinguishable from the runner-up on these samples:

- accuracy: the Wilson score interval (binomial; good at small n and near 0 or 1);
- any other score (R^2, RMSE): a seeded percentile bootstrap over the test samples, so a
  rerun prints the same interval byte for byte;
- champion vs runner-up, on the same test samples: McNemar's exact test on the samples
  where exactly one of the two is right (classes), or the Wilcoxon signed-rank test on
  their squared errors (regression); p >= 0.05 is reported as a statistical tie.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
ALPHA = 1.0 - LEVEL
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def wilson_interval(correct: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of an accuracy of `correct` out of `n`."""
    from scipy.stats import binomtest

    if n == 0:
        return (0.0, 1.0)
    interval = binomtest(int(correct), int(n)).proportion_ci(confidence_level=LEVEL, method="wilson")
    return float(interval.low), float(interval.high)


def bootstrap_interval(actual: np.ndarray, predicted: np.ndarray, statistic) -> tuple[float, float]:
    """95% percentile-bootstrap interval of `statistic(actual, predicted)` over the test samples (seeded)."""
    from scipy.stats import bootstrap

    if len(actual) < 3:
        return (float("nan"), float("nan"))
    result = bootstrap((np.asarray(actual), np.asarray(predicted)), statistic, paired=True, vectorized=False,
                       n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=LEVEL, method="percentile",
                       rng=np.random.default_rng(BOOTSTRAP_SEED))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def r2(actual: np.ndarray, predicted: np.ndarray) -> float:
    spread = float(np.sum((actual - actual.mean()) ** 2))
    return 1.0 - float(np.sum((actual - predicted) ** 2)) / spread if spread > 0 else float("nan")


@dataclass(frozen=True)
class Comparison:
    """The champion against another final model on the same test samples."""

    other: str
    test: str          # "McNemar exact" or "Wilcoxon signed-rank"
    p_value: float

    @property
    def tied(self) -> bool:
        return self.p_value >= ALPHA

    def describe(self) -> str:
        verdict = "statistically tied with" if self.tied else "distinguishable from"
        return f"{verdict} {self.other} ({self.test} p = {self.p_value:.3g} on the same test samples)"


def mcnemar_exact(champion_right: np.ndarray, other_right: np.ndarray) -> float:
    """Two-sided exact McNemar p-value: a binomial test on the samples where exactly one is right."""
    from scipy.stats import binomtest

    only_champion = int(np.sum(champion_right & ~other_right))
    only_other = int(np.sum(~champion_right & other_right))
    if only_champion + only_other == 0:
        return 1.0
    return float(binomtest(only_champion, only_champion + only_other, 0.5).pvalue)


def paired_errors_p(champion_error: np.ndarray, other_error: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value on the paired squared errors (1.0 when all equal)."""
    from scipy.stats import wilcoxon

    difference = np.asarray(champion_error) - np.asarray(other_error)
    if not np.any(difference):
        return 1.0
    return float(wilcoxon(champion_error, other_error).pvalue)
