"""Tests for trainlab.diagnose on realistic synthetic learning curves (seeded noise)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import yaml

from trainlab.diagnose import (
    FINDING_NAMES,
    Finding,
    canonicalize,
    diagnose,
    render_markdown,
    summary,
)
from trainlab.testing import ROOT

from helpers.diagnose import EPOCHS, OVERFIT_MIN_EPOCH, noisy, overfit_run, pts

STEPS_PER_EPOCH = 40


def cosine(base: float, n: int) -> np.ndarray:
    """lr at the end of each of n epochs/steps of a cosine schedule."""
    return base * 0.5 * (1 + np.cos(np.pi * (np.arange(n) + 1) / n))


def step_loss(rng, epoch_curve, spe: int = STEPS_PER_EPOCH, batch_noise: float = 0.08) -> list:
    """Per-step batch losses scattered around the epoch curve interpolated to fractional epochs."""
    g = np.arange(len(epoch_curve) * spe)
    trend = np.interp(g / spe, np.arange(len(epoch_curve)), epoch_curve)
    return pts(np.abs(trend * (1 + batch_noise * rng.standard_normal(len(g)))))


def healthy_run(seed: int = 0, epochs: int = EPOCHS) -> dict:
    """Both losses decay exponentially with noise to a small stable gap, cosine lr, sane grads."""
    rng = np.random.default_rng(seed)
    t = np.arange(epochs)
    train = 0.04 + 2.26 * np.exp(-(t + 0.5) / 4.0)
    val = 0.09 + 2.21 * np.exp(-(t + 1.0) / 4.5)
    n_steps = epochs * STEPS_PER_EPOCH
    layer_steps = np.arange(0, n_steps, 20)
    curves = {
        "epoch/train_loss": pts(noisy(rng, train, 0.02)),
        "val/loss": pts(noisy(rng, val, 0.03)),
        "epoch/train_acc": pts(0.995 - 0.895 * np.exp(-(t + 0.5) / 4.0)),
        "val/acc": pts(
            np.clip(
                0.975 - 0.875 * np.exp(-(t + 1) / 4.5) + 0.004 * rng.standard_normal(epochs), 0, 1
            )
        ),
        "epoch/lr": pts(cosine(1e-3, epochs)),
        "train/loss": step_loss(rng, train),
        "lr": pts(cosine(1e-3, n_steps)),
        "grad_norm": pts(
            np.exp(rng.normal(0.0, 0.3, n_steps)) * (1 + 0.5 * np.arange(n_steps) / n_steps)
        ),
    }
    for name, scale in (
        ("00_stem", 0.05),
        ("01_block1", 0.08),
        ("02_block2", 0.12),
        ("03_head", 0.4),
    ):
        curves[f"grad_norm/{name}"] = pts(
            scale * np.exp(rng.normal(0, 0.3, len(layer_steps))), layer_steps
        )
    return curves


def underfit_run(
    seed: int = 0, epochs: int = EPOCHS, floor: float = 1.9, tau: float = 3.0, top_acc: float = 0.35
) -> dict:
    """Both losses plateau well above zero (chance ln 10 = 2.30), accuracy ~0.35 on both."""
    rng = np.random.default_rng(seed)
    t = np.arange(epochs)
    train = floor + (2.3 - floor) * np.exp(-(t + 0.5) / tau)
    val = floor + 0.03 + (2.27 - floor) * np.exp(-(t + 1) / tau)
    acc = 0.1 + (top_acc - 0.1) * (2.3 - train) / (2.3 - floor)
    return {
        "epoch/train_loss": pts(noisy(rng, train, 0.01)),
        "val/loss": pts(noisy(rng, val, 0.01)),
        "epoch/train_acc": pts(noisy(rng, acc, 0.02)),
        "val/acc": pts(noisy(rng, acc - 0.01, 0.02)),
        "epoch/lr": pts(cosine(1e-3, epochs)),
    }


def lr_too_high_run(seed: int = 0) -> dict:
    """SGD at lr 0.5: the step loss jumps up from chance, spikes wildly and never gets low."""
    rng = np.random.default_rng(seed)
    epochs, spe = 20, 30
    g = np.arange(epochs * spe)
    trend = 2.3 + 0.9 * (1 - np.exp(-g / 60)) * np.exp(-g / 900)
    steps = trend * np.exp(0.35 * rng.standard_normal(len(g)))
    epoch_mean = steps.reshape(epochs, spe).mean(axis=1)
    return {
        "train/loss": pts(steps),
        "epoch/train_loss": pts(epoch_mean),
        "val/loss": pts(noisy(rng, epoch_mean + 0.05, 0.05)),
        "epoch/train_acc": pts(0.1 + 0.05 * rng.random(epochs)),
        "val/acc": pts(0.1 + 0.05 * rng.random(epochs)),
        "lr": pts(np.full(len(g), 0.5)),
        "epoch/lr": pts(np.full(epochs, 0.5)),
    }


def lr_too_low_run(seed: int = 0) -> dict:
    """Adam at lr 1e-5: the loss creeps down from chance by ~7% over 30 epochs."""
    rng = np.random.default_rng(seed)
    t = np.arange(EPOCHS)
    train = 2.31 - 0.0055 * t
    return {
        "epoch/train_loss": pts(noisy(rng, train, 0.003)),
        "val/loss": pts(noisy(rng, train + 0.01, 0.003)),
        "epoch/train_acc": pts(0.11 + 0.003 * t),
        "val/acc": pts(0.105 + 0.003 * t),
        "epoch/lr": pts(np.full(EPOCHS, 1e-5)),
        "train/loss": step_loss(rng, train, batch_noise=0.04),
    }


def stuck_then_drop_run(seed: int = 0) -> dict:
    """Loss sits at chance for ~10 epochs, then falls off a cliff to a good solution."""
    rng = np.random.default_rng(seed)
    t = np.arange(EPOCHS)
    train = 0.08 + 2.22 / (1 + np.exp((t - 11) / 0.8))
    val = 0.12 + 2.18 / (1 + np.exp((t - 11.3) / 0.8))
    acc = 0.1 + 0.86 / (1 + np.exp(-(t - 11) / 0.8))
    return {
        "epoch/train_loss": pts(noisy(rng, train, 0.01)),
        "val/loss": pts(noisy(rng, val, 0.02)),
        "epoch/train_acc": pts(acc),
        "val/acc": pts(acc - 0.02),
        "epoch/lr": pts(cosine(1e-3, EPOCHS)),
    }


def never_left_chance_run(seed: int = 0) -> dict:
    """A normal lr (1e-3) yet the loss stays flat at ln 10 for the whole run (dead network)."""
    rng = np.random.default_rng(seed)
    flat = np.full(20, math.log(10))
    return {
        "epoch/train_loss": pts(noisy(rng, flat, 0.003)),
        "val/loss": pts(noisy(rng, flat + 0.002, 0.003)),
        "epoch/train_acc": pts(0.1 + 0.005 * rng.standard_normal(20)),
        "val/acc": pts(0.1 + 0.005 * rng.standard_normal(20)),
        "epoch/lr": pts(np.full(20, 1e-3)),
    }


def premature_decay_run(seed: int = 0) -> dict:
    """Step decay 0.1 -> 0.001 at epoch 8 while val loss still falls fast; it stalls after."""
    rng = np.random.default_rng(seed)
    t = np.arange(EPOCHS, dtype=float)
    cut = 8
    fast = 0.25 + 2.05 * np.exp(-(t + 1) / 6)
    at_cut = fast[cut - 1]
    val = np.where(t < cut, fast, at_cut - 0.06 * (1 - np.exp(-(t - cut + 1))) - 0.0015 * (t - cut))
    train = val - 0.03
    acc = 0.1 + 0.8 * (2.3 - val) / 2.3
    return {
        "epoch/train_loss": pts(noisy(rng, train, 0.01)),
        "val/loss": pts(noisy(rng, val, 0.01)),
        "epoch/train_acc": pts(acc + 0.01),
        "val/acc": pts(acc),
        "epoch/lr": pts(np.where(t < cut, 0.1, 0.001)),
    }


def names(curves, **kw) -> set[str]:
    return {f.name for f in diagnose(curves, **kw)}


def only(curves, name, **kw) -> Finding:
    findings = diagnose(curves, **kw)
    assert {f.name for f in findings} == {name}, [(f.name, f.evidence) for f in findings]
    return findings[0]


def assert_readable(f: Finding, *numbers: str) -> None:
    assert f.evidence.strip() and f.suggestion.strip()
    for n in numbers:
        assert n in f.evidence or n in f.suggestion, (n, f.evidence, f.suggestion)
    json.dumps(f.data)  # machine-readable evidence must be JSON-serialisable for metrics files


# ---------------------------------------------------------------------------------------------
# one test per finding
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_healthy_run_is_healthy(seed):
    f = only(healthy_run(seed), "healthy", num_classes=10)
    assert "no problem found" in f.evidence
    assert f.data["final_val_loss"] > f.data["final_train_loss"]
    assert_readable(f, f"{f.data['final_train_loss']:.3g}", f"{f.data['final_val_loss']:.3g}")


def test_healthy_without_num_classes_or_step_curves():
    run = {k: v for k, v in healthy_run(3).items() if k.startswith(("epoch/", "val/"))}
    assert names(run) == {"healthy"}


def test_short_healthy_run_is_healthy():
    assert names(healthy_run(4, epochs=10), num_classes=10) == {"healthy"}


def test_small_late_val_rise_is_not_overfitting():
    """Val loss ending ~4% above its minimum (noise, mild drift) must stay healthy."""
    rng = np.random.default_rng(5)
    run = healthy_run(5)
    t = np.arange(EPOCHS)
    val = 0.09 + 2.21 * np.exp(-(t + 1.0) / 4.5) + 0.0006 * np.maximum(t - 20, 0) ** 1.5
    run["val/loss"] = pts(noisy(rng, val, 0.015))
    best, end = val.min(), val[-3:].mean()
    assert 0.02 < end / best - 1 < 0.06
    assert names(run, num_classes=10) == {"healthy"}


def test_six_percent_rise_at_higher_loss_is_not_overfitting():
    """+6% over the val minimum (0.03 nats at val loss ~0.5) is drift, not overfitting."""
    rng = np.random.default_rng(14)
    t = np.arange(EPOCHS)
    val = 0.48 + 1.8 * np.exp(-(t + 1) / 4.0) + 0.045 * np.clip((t - 20) / 9, 0, 1)
    train = 0.3 + 2.0 * np.exp(-(t + 0.5) / 4.0) - 0.002 * t
    run = {
        "epoch/train_loss": pts(noisy(rng, train, 0.01)),
        "val/loss": pts(noisy(rng, val, 0.005)),
        "epoch/train_acc": pts(0.92 - 0.8 * np.exp(-(t + 0.5) / 4.0)),
        "val/acc": pts(0.88 - 0.78 * np.exp(-(t + 1) / 4.0)),
        "epoch/lr": pts(cosine(1e-3, EPOCHS)),
    }
    assert 0.05 < val[-3:].mean() / val.min() - 1 < 0.07
    assert names(run, num_classes=10) == {"healthy"}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_overfitting_onset_near_true_minimum(seed):
    f = only(overfit_run(seed), "overfitting", num_classes=10)
    # The curves count epochs from 0, the diagnosis (like every epoch people see) from 1.
    assert abs(f.data["onset_epoch"] - (OVERFIT_MIN_EPOCH + 1)) <= 2
    assert f.data["final_gap"] > f.data["gap_at_onset"]
    onset = f.data["onset_epoch"]
    assert_readable(
        f, f"epoch {onset}", f"{f.data['best_val_loss']:.3g}", "weight_decay", "dropout"
    )


def test_epochs_in_the_text_count_from_1_like_the_epoch_lines():
    """The curves hold epochs 0..29; the text says epochs 1..30, as the epoch lines, DVC and MLflow do."""
    f = only(overfit_run(0), "overfitting", num_classes=10)
    onset = f.data["onset_epoch"]
    assert f"in epoch {onset} " in f.evidence and f"by epoch {EPOCHS} " in f.evidence
    assert f"keep the weights of epoch {onset}:" in f.suggestion and f"epochs: {onset}`." in f.suggestion
    premature = only(premature_decay_run(), "premature_lr_decay", num_classes=10)
    assert f"(epochs {premature.data['cut_epoch'] + 2}-" in premature.evidence   # from 2 epochs after the cut


def test_healthy_says_which_losses_it_quotes():
    """Not the last epoch line's figures: medians over the last epochs, of the epoch-mean train
    loss and the evaluation-pass val loss, and it says so."""
    f = only(healthy_run(0), "healthy", num_classes=10)
    assert f.evidence.startswith("train loss (mean over each epoch's batches) and val loss (evaluation pass "
                                 "after each epoch) fell together to ")
    assert f"(medians of the last {round(0.1 * EPOCHS)} epochs; gap " in f.evidence


def test_underfitting_flat_suggests_capacity():
    f = only(underfit_run(), "underfitting", num_classes=10)
    assert f.data["still_improving"] is False
    assert f.data["final_train_acc"] < 0.4
    assert_readable(f, f"{f.data['final_train_acc']:.3g}", "optimizer.lr")
    assert "capacity" in f.suggestion


def test_underfitting_still_improving_suggests_longer_training():
    # 12 epochs, loss still falling fast at the end, accuracy ~0.55: better, still clearly poor
    run = underfit_run(seed=1, epochs=12, floor=0.8, tau=8.0, top_acc=0.75)
    f = only(run, "underfitting", num_classes=10)
    assert f.data["still_improving"] is True
    assert "`<stage>.epochs`" in f.suggestion


def test_underfitting_from_loss_only_relative_to_chance():
    run = {k: v for k, v in underfit_run(2).items() if "acc" not in k}
    f = only(run, "underfitting", num_classes=10)
    assert_readable(f, "2.3")  # chance ln(10) quoted


def test_lr_too_high():
    f = only(lr_too_high_run(), "lr_too_high", num_classes=10)
    assert f.data["lr"] == 0.5
    assert_readable(f, "0.5", "0.05", "warmup")


def test_lr_too_high_by_oscillation_alone():
    """No early rise, but the step loss jumps by tens of percent around a high plateau."""
    rng = np.random.default_rng(15)
    g = np.arange(600)
    trend = 1.9 + 0.4 * np.exp(-g / 30)  # falls a little from chance, then hovers high
    run = {
        "train/loss": pts(trend * np.exp(0.3 * rng.standard_normal(len(g)))),
        "lr": pts(np.full(len(g), 0.3)),
    }
    f = only(run, "lr_too_high", num_classes=10)
    assert f.data["early_rise"] <= 0.2 and f.data["roughness"] > 0.12
    assert_readable(f, "oscillated", "0.3")


def test_lr_too_low():
    f = only(lr_too_low_run(), "lr_too_low", num_classes=10)
    assert f.data["relative_decrease"] < 0.1
    assert_readable(f, "1e-05", "0.0001")


def test_poor_init_stuck_then_drop():
    f = only(stuck_then_drop_run(), "poor_initialization", num_classes=10)
    assert f.data["kind"] == "stuck_then_drop"
    assert 9 <= f.data["plateau_end"] <= 12   # 1-based: epochs 9..12 are indices 8..11
    assert_readable(f, "2.3", "init")


def test_poor_init_never_left_chance_is_not_lr_too_low():
    f = only(never_left_chance_run(), "poor_initialization", num_classes=10)
    assert f.data["kind"] == "never_left_chance"
    assert_readable(f, "0.001", "batch norm")


def test_loss_near_chance_with_rising_accuracy_is_underfitting_not_dead():
    """A tiny model (width-2 MLP) keeps its loss within 10% of ln 10 but its accuracy climbs."""
    run = never_left_chance_run()
    n = len(run["epoch/train_acc"])
    run["epoch/train_acc"] = pts(np.linspace(0.11, 0.16, n))
    run["val/acc"] = pts(np.linspace(0.11, 0.155, n))
    assert names(run, num_classes=10) == {"underfitting"}


def test_poor_init_huge_initial_loss():
    run = healthy_run(6)
    steps = [(s, v * 12.0 if s < 15 else v) for s, v in run["train/loss"]]  # logits start huge
    run["train/loss"] = steps
    f = only(run, "poor_initialization", num_classes=10)
    assert f.data["kind"] == "huge_initial_loss"


def test_premature_lr_decay():
    f = only(premature_decay_run(), "premature_lr_decay", num_classes=10)
    # The lr is cut at curve index 8: the 9th epoch, as the epoch lines and DVC's curves count.
    assert f.data["cut_epoch"] == 9
    assert f.data["post_rate"] < 0.4 * f.data["expected_post_rate"] < 0.4 * f.data["pre_rate"]
    assert_readable(f, "epoch 9", "0.1", "0.001", "cosine")


def test_step_decay_after_convergence_is_healthy():
    run = healthy_run(7)
    run["epoch/lr"] = pts(np.where(np.arange(EPOCHS) < 20, 0.1, 0.01))
    del run["lr"]
    assert names(run, num_classes=10) == {"healthy"}


def test_premature_decay_from_step_lr_and_val_acc_only():
    run = premature_decay_run(1)
    lr_epochs = [v for _, v in run.pop("epoch/lr")]
    run["lr"] = pts(np.repeat(lr_epochs, STEPS_PER_EPOCH))
    del run["val/loss"]
    assert names(run, num_classes=10) == {"premature_lr_decay"}


def test_diverged_nan_reports_step_and_lr():
    run = healthy_run(8)
    warm = np.linspace(0.01, 2.0, EPOCHS * STEPS_PER_EPOCH)  # warmup to an absurd lr
    run["lr"] = pts(warm)
    run["train/loss"] = [(s, math.nan if s >= 350 else v) for s, v in run["train/loss"]]
    run["epoch/train_loss"] = [(s, math.inf if s >= 8 else v) for s, v in run["epoch/train_loss"]]
    run["val/loss"] = [(s, math.nan if s >= 8 else v) for s, v in run["val/loss"]]
    f = only(run, "diverged", num_classes=10)
    assert f.data["first_nonfinite_step"] == 350
    assert f.data["lr_at_divergence"] == pytest.approx(warm[350])
    assert_readable(f, "step 350", f"{warm[350]:.2g}", "clip_grad_norm")


def test_diverged_finite_blow_up():
    rng = np.random.default_rng(9)
    t = np.arange(EPOCHS)
    train = np.where(t < 12, 0.4 + 1.9 * np.exp(-t / 3), 0.45 * np.exp((t - 12) / 5.0))
    run = {
        "epoch/train_loss": pts(noisy(rng, train, 0.02)),
        "val/loss": pts(noisy(rng, train + 0.1, 0.02)),
        "epoch/lr": pts(np.full(EPOCHS, 0.3)),
    }
    f = only(run, "diverged", num_classes=10)
    assert f.data["final_loss"] > 3 * f.data["min_loss"]


def test_vanishing_gradients_per_layer():
    run = healthy_run(10)
    for key, scale in (
        ("grad_norm/00_stem", 1e-7),
        ("grad_norm/01_block1", 1e-5),
        ("grad_norm/02_block2", 1e-3),
    ):
        run[key] = [(s, v / 0.05 * scale) for s, v in run[key]]
    f = only(run, "vanishing_gradients", num_classes=10)
    assert (
        f.data["first_layer"] == "grad_norm/00_stem" and f.data["last_layer"] == "grad_norm/03_head"
    )
    assert f.data["ratio_first_last"] < 1e-3
    assert_readable(f, "00_stem", "resnet1d", "batch norm")


def test_exploding_gradients_per_layer_and_global():
    run = healthy_run(11)
    run["grad_norm/00_stem"] = [(s, v * 1e5) for s, v in run["grad_norm/00_stem"]]
    f = only(run, "exploding_gradients", num_classes=10)
    assert f.data["ratio_first_last"] > 1e3

    run = healthy_run(12)
    n = len(run["grad_norm"])
    run["grad_norm"] = [(s, v * 10 ** (5 * s / n)) for s, v in run["grad_norm"]]
    f = only(run, "exploding_gradients", num_classes=10)
    assert f.data["growth"] > 1e3
    assert_readable(f, "clip_grad_norm")


def _params_keys(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in tree.items():
        keys.add(prefix + key)
        if isinstance(value, dict):
            keys |= _params_keys(value, f"{prefix}{key}.")
    return keys


def _one_of_each_problem() -> list:
    """One synthetic run per problem finding (the constructions of the tests above)."""
    diverged = healthy_run(8)
    diverged["train/loss"] = [(s, math.nan if s >= 350 else v) for s, v in diverged["train/loss"]]
    vanishing, exploding, huge_init = healthy_run(10), healthy_run(11), healthy_run(6)
    vanishing["grad_norm/00_stem"] = [(s, v * 1e-6) for s, v in vanishing["grad_norm/00_stem"]]
    exploding["grad_norm/00_stem"] = [(s, v * 1e5) for s, v in exploding["grad_norm/00_stem"]]
    huge_init["train/loss"] = [(s, v * 12.0 if s < 15 else v) for s, v in huge_init["train/loss"]]
    return [
        diverged, vanishing, exploding, huge_init, lr_too_high_run(), lr_too_low_run(),
        stuck_then_drop_run(), never_left_chance_run(), premature_decay_run(), overfit_run(),
        underfit_run(), underfit_run(seed=1, epochs=12, floor=0.8, tau=8.0, top_acc=0.75),
    ]


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_suggestions_name_real_params_keys(stage):
    """Every dotted settings name in a suggestion is a key of the project's params.yaml."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    keys = _params_keys(params)
    # bare sub-section names (optimizer.lr) or invented ones (trainer.epochs) must not appear
    roots = set(params) | {"optimizer", "schedule", "early_stopping", "<stage>"}
    runs = _one_of_each_problem()
    findings = [f for run in runs for f in diagnose(run, num_classes=10, stage=stage)]
    findings += diagnose(healthy_run(), num_classes=10, stage=stage, val_samples=6)   # small_validation
    problems = set(FINDING_NAMES) - {"healthy", "insufficient_data"}
    assert {f.name for f in findings} == problems  # every suggestion text is checked
    for f in findings:
        named = re.findall(r"[a-z_<>]+(?:\.[a-z_0-9]+)+", f.suggestion)
        settings = [n for n in named if n.split(".")[0] in roots]
        assert settings, f.suggestion
        assert set(settings) <= keys, (set(settings) - keys, f.suggestion)
        assert "<stage>" not in f.suggestion
    # without a stage the placeholder stays, to be read as "pretrain or finetune"
    assert "`<stage>.optimizer.lr`" in diagnose(lr_too_high_run(), num_classes=10)[0].suggestion


# ---------------------------------------------------------------------------------------------
# input handling and outputs
# ---------------------------------------------------------------------------------------------
def test_canonicalize_aliases_and_precedence():
    c = canonicalize(
        {
            "loss": [(1, 2.0), (0, 3.0)],
            "val_loss": [(0, 3.1)],
            "val_accuracy": [(0, 0.5)],
            "accuracy": [(0, 0.4)],
            "learning_rate": [(0, 0.1)],
            "custom": [(0, 1.0)],
        }
    )
    assert c["epoch/train_loss"] == [(0, 3.0), (1, 2.0)]  # sorted by step
    assert set(c) == {"epoch/train_loss", "val/loss", "val/acc", "epoch/train_acc", "lr", "custom"}
    both = canonicalize({"val/loss": [(0, 1.0)], "val_loss": [(0, 9.0)]})
    assert both["val/loss"] == [(0, 1.0)]  # the engine's own name wins
    assert canonicalize({"train_loss": [(0, 1.0)], "loss": [(0, 5.0)]})["epoch/train_loss"] == [
        (0, 1.0)
    ]


def test_alias_logged_run_is_diagnosed():
    """A Keras-style run (loss / val_loss / accuracy / val_accuracy in percent) still overfits."""
    run = overfit_run(4)
    foreign = {
        "loss": run["epoch/train_loss"],
        "val_loss": run["val/loss"],
        "accuracy": [(s, 100 * v) for s, v in run["epoch/train_acc"]],
        "val_accuracy": [(s, 100 * v) for s, v in run["val/acc"]],
    }
    f = only(foreign, "overfitting")
    assert abs(f.data["onset_epoch"] - (OVERFIT_MIN_EPOCH + 1)) <= 2


def test_nan_values_outside_train_loss_are_tolerated():
    run = healthy_run(13)
    run["val/loss"][5] = (5, math.nan)
    run["val/acc"][6] = (6, math.inf)
    run["grad_norm"][100] = (100, math.inf)  # fp16 overflow step
    assert names(run, num_classes=10) == {"healthy"}


def test_no_usable_curves_gives_insufficient_data():
    assert names({}) == {"insufficient_data"}
    assert names({"custom": [(0, 1.0)], "val/loss": [(0, math.nan)]}) == {"insufficient_data"}


def test_summary_has_a_key_for_each_finding_made():
    """Only the findings made (twelve 0/1 keys were twelve mostly-empty `dvc metrics show` columns)."""
    for run, made in ((healthy_run(), "healthy"), (overfit_run(), "overfitting"), ({}, "insufficient_data")):
        assert summary(diagnose(run)) == {f"diagnosis/{made}": 1}
    both = summary([Finding("underfitting", "e", "s"), Finding("diverged", "e", "s")])
    assert list(both) == ["diagnosis/diverged", "diagnosis/underfitting"]   # severity order, as FINDING_NAMES
    assert {"healthy", "overfitting", "underfitting", "diverged"} <= set(FINDING_NAMES)


def test_render_markdown_has_one_section_per_finding():
    findings = diagnose(premature_decay_run()) + diagnose(overfit_run())
    md = render_markdown(findings)
    assert md.startswith("# Training diagnosis")
    assert md.count("\n## ") == 2
    for f in findings:
        assert f.evidence in md and f.suggestion in md and f"`{f.name}`" in md
    assert "healthy" in render_markdown(diagnose(healthy_run()))


def test_finding_rejects_unknown_name():
    with pytest.raises(ValueError):
        Finding("sad", "e", "s", {})
