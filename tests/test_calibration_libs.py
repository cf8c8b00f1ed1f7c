"""Calibration by libraries, checked against references written here: the ECE (torchmetrics)
against an explicit loop over equal-width bins, the reliability rows against that ECE, the
temperature (scipy's bounded search) against closed-form optima and a fine grid, and the
confusion figure (scikit-learn) for ten long class names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trainlab.calibration import LOG_T_RANGE, expected_calibration_error, fit_temperature, reliability_rows


def ece_by_loop(probs: np.ndarray, y: np.ndarray, bins: int) -> float:
    """Guo et al. (2017), eq. 5, one sample at a time: bin m holds confidences in [m/M, (m+1)/M)."""
    counts, confidence_sums, correct_sums = [0] * bins, [0.0] * bins, [0] * bins
    for p, label in zip(probs, y):
        m = min(int(p.max() * bins), bins - 1)
        counts[m] += 1
        confidence_sums[m] += p.max()
        correct_sums[m] += int(p.argmax() == label)
    return sum(abs(correct_sums[m] - confidence_sums[m]) / len(y) for m in range(bins) if counts[m])


@pytest.mark.parametrize("n, classes, bins", [(7, 3, 2), (50, 2, 10), (300, 10, 15), (1000, 10, 100)])
def test_ece_matches_an_explicit_loop_over_bins(n: int, classes: int, bins: int) -> None:
    rng = np.random.default_rng(n)
    # Mixed with a little uniform: no confidence within float32 rounding of 1, where the
    # library's binning departs from the textbook's (see the reliability test below).
    probs = 0.98 * rng.dirichlet(np.full(classes, 0.3), size=n) + 0.02 / classes
    y = np.array([rng.choice(classes, p=p) for p in probs])   # a calibrated model: small ECE
    y[: n // 3] = rng.integers(0, classes, n // 3)            # and some noise: a larger one
    # torchmetrics sums in float32: 1e-6 is its rounding at these sizes, not a difference of method
    assert expected_calibration_error(probs, y, bins) == pytest.approx(ece_by_loop(probs, y, bins), abs=1e-6)


def test_ece_by_hand() -> None:
    # Two bins, [0, .5) and [.5, 1]. Confidence .35, wrong: 1/4 * .35 = .0875. Confidences
    # .6 and .7 right, .9 wrong: 3/4 * |2/3 - 2.2/3| = .05.
    probs = np.array([[0.3, 0.35, 0.35], [0.6, 0.2, 0.2], [0.1, 0.7, 0.2], [0.05, 0.05, 0.9]])
    y = np.array([0, 0, 1, 0])
    assert expected_calibration_error(probs, y, 2) == pytest.approx(0.0875 + 0.05, abs=1e-7)


def test_a_probability_an_ulp_above_one_is_not_taken_for_a_logit() -> None:
    # Three members sure of class 0, weighted (softmax weights, float32) by combine's einsum,
    # give 1 + 2**-23; torchmetrics would take the batch for logits and softmax it.
    import torch

    weights = torch.tensor([0.6980528235435486, 0.020088989287614822, 0.28185829520225525])
    mean = torch.einsum("m,mnc->nc", weights, torch.tensor([[[1.0, 0.0]]] * 3)).double().numpy()
    probs = np.vstack([mean, [[0.8, 0.2]]])
    assert probs[0, 0] > 1.0
    assert expected_calibration_error(probs, np.array([0, 0]), 10) == pytest.approx(0.1, abs=1e-7)


@pytest.mark.parametrize("bins", [2, 4, 10, 15])
def test_reliability_rows_add_up_to_the_ece_on_bin_edges_and_at_one(bins: int) -> None:
    """If this fails, torchmetrics changed its binning (say, Lightning-AI/torchmetrics#3510:
    a confidence of exactly 1.0 counted in a bin of its own): make `reliability_rows` bin the
    same way again, and re-record evaluate's ECE figures."""
    rng = np.random.default_rng(bins)
    edges = [[e, 1 - e] if e >= 0.5 else [0.5, 0.5] for e in np.linspace(0, 1, bins + 1)]
    saturated = [[1.0, 0.0]] * 6 + [[0.97, 0.03]] * 3
    probs = np.vstack([rng.dirichlet([0.5, 0.5], size=40), edges, saturated])
    y = rng.integers(0, 2, len(probs))
    rows = reliability_rows(probs, y, bins)
    assert sum(r["count"] for r in rows) == len(y)
    weighted_gaps = sum(r["count"] / len(y) * abs(r["accuracy"] - r["confidence"]) for r in rows)
    assert weighted_gaps == pytest.approx(expected_calibration_error(probs, y, bins), abs=1e-6)


# ------------------------------------------------------------------------------ temperature
def reference_loss(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    """fit_temperature's objective, written again: cross-entropy against targets that give
    1/(n + 1) to a uniform guess."""
    n, classes = logits.shape
    doubt = 1.0 / (n + 1)
    z = logits / temperature
    log_p = z - z.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    return float(-((1 - doubt) * log_p[np.arange(n), y] + doubt * log_p.mean(1)).mean())


@pytest.mark.parametrize("classes, right", [(2, 80), (2, 97), (10, 60), (10, 99)])
def test_temperature_hits_the_closed_form_optimum(classes: int, right: int) -> None:
    # 100 samples, all with logits (a, 0, ..., 0), `right` of them of class 0: the best
    # softmax gives class 0 the targets' mean share t, so a / T = log(t (K - 1) / (1 - t)).
    a, n = 3.0, 100
    logits = np.zeros((n, classes))
    logits[:, 0] = a
    y = np.where(np.arange(n) < right, 0, 1 + np.arange(n) % (classes - 1))
    doubt = 1.0 / (n + 1)
    share = right / n * (1 - doubt) + doubt / classes
    expected = a / np.log(share * (classes - 1) / (1 - share))
    assert fit_temperature(logits, y) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_temperature_matches_a_fine_grid(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, classes = 200, 2 + 4 * seed
    y = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes)) + rng.uniform(0, 4) * np.eye(classes)[y] * rng.choice([1, -1, 3])
    coarse = np.linspace(*LOG_T_RANGE, 6001)                  # steps of 1e-3 in log T, then 1e-6 around the best
    best = coarse[np.argmin([reference_loss(logits, y, np.exp(t)) for t in coarse])]
    fine = np.clip(np.linspace(best - 1e-3, best + 1e-3, 2001), *LOG_T_RANGE)
    best = fine[np.argmin([reference_loss(logits, y, np.exp(t)) for t in fine])]
    expected = np.exp(best) if reference_loss(logits, y, np.exp(best)) < reference_loss(logits, y, 1.0) else 1.0
    assert fit_temperature(logits, y) == pytest.approx(expected, rel=1e-4)


def test_temperature_at_the_bound_of_its_range() -> None:
    # Sure of itself and right half the time: flatten as far as the range allows, T = e^3.
    y = np.arange(200) % 2
    logits = np.where(np.arange(200)[:, None] % 4 < 2, [[50.0, 0.0]], [[0.0, 50.0]])
    assert fit_temperature(logits, y) == pytest.approx(np.exp(LOG_T_RANGE[1]), rel=1e-5)


def test_the_libraries_stay_off_the_import_of_the_module() -> None:
    # selection, serving and ensemble import trainlab.calibration at the top; torchmetrics
    # (~0.5 s after torch) and scipy.optimize (~0.2 s) load only when a function needs them.
    code = ("import sys, trainlab.calibration\n"
            "print(sorted(m for m in ('torch', 'torchmetrics', 'scipy.optimize') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------- figure
def test_confusion_figure_labels_ten_long_class_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trainlab.evaluation import plots as evaluation_plots
    from trainlab.evaluation.scores import ModelScore
    from trainlab.heldout import HeldOut

    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    confusion = np.full((10, 10), 3) + np.diag(np.full(10, 947))   # 950 on the diagonal
    score = ModelScore("demo", {"acc": 0.9}, 0.1, "validation", HeldOut("val", np.eye(2), np.array([0, 1])),
                       confusion=confusion)
    figures = []
    save = evaluation_plots._save
    monkeypatch.setattr(evaluation_plots, "_save", lambda fig, path: (figures.append(fig), save(fig, path))[1])
    path = evaluation_plots.plot_confusion(score, names, tmp_path / "confusion_demo.png")
    assert path.read_bytes().startswith(b"\x89PNG")
    ax = figures[0].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == names == [t.get_text() for t in ax.get_yticklabels()]
    assert all(t.get_rotation() == 90 for t in ax.get_xticklabels())      # upright: long names do not overlap
    cells = sorted(t.get_text() for t in ax.texts)
    assert cells == sorted(["950"] * 10 + ["3"] * 90)
