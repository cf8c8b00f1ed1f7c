"""The diagnosis on real short trainings: each failure mode is provoked on MNIST-1D, then named.

Every run is the engine's own `fit()` with a `CurveRecorder` hook (the curves a training stage
diagnoses), configured from the project's params.yaml shrunk by `small_params()`. The expected
finding is what the provoked setting is known to cause; where a finding carries a number (the
overfitting onset) it is checked against the recorded curve itself. All runs are single-threaded
and tiny: ~13 s of CPU for the module, so it is not marked slow.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from mnist1d.data import get_dataset_args, make_dataset

from trainlab.config import validate
from trainlab.diagnose import diagnose
from trainlab.engine import TrainData, fit, seed_everything
from trainlab.errors import TrainingDiverged
from trainlab.training.curves import CurveRecorder
from trainlab.models import build_model
from trainlab.testing import small_params

CLASSES = 10


@pytest.fixture(scope="module")
def mnist1d() -> dict[str, np.ndarray]:
    """The MNIST-1D paper's standard split (4,000 train / 1,000 test), generated offline."""
    return make_dataset(get_dataset_args())


def train(data: dict[str, np.ndarray], n_train: int, **overrides: Any) -> dict:
    """Curves of a pretrain-spec fit on the first `n_train` train samples (val: the 1,000 test ones).

    `overrides` are small_params() keys (dots as __). When fit raises TrainingDiverged the curves
    recorded until then are returned: a diverging run must be diagnosed too.
    """
    params = validate(small_params(trainer__threads=1, trainer__progress="off", **overrides))
    train_data = TrainData(data["x"][:n_train].astype(np.float32), data["y"][:n_train].astype(np.int64))
    val_data = TrainData(data["x_test"].astype(np.float32), data["y_test"].astype(np.int64))
    seed_everything(params.seed)
    model = build_model(params.model, (data["x"].shape[1],), CLASSES)
    recorder = CurveRecorder()
    try:
        fit(model, train_data, val_data, params.pretrain, params.trainer, seed=params.seed, hooks=[recorder])
    except TrainingDiverged:
        pass
    return recorder.curves


def names(curves: dict) -> list[str]:
    return [f.name for f in diagnose(curves, num_classes=CLASSES)]


def values(curves: dict, key: str) -> np.ndarray:
    return np.array([v for _, v in curves[key]])


NO_EARLY_STOP = {"pretrain__early_stopping__enabled": False}


@pytest.fixture(scope="module")
def healthy_curves(mnist1d) -> dict:
    """A default-like training: resnet1d width 16 depth 3, AdamW 3e-3, cosine with warmup, 10 epochs."""
    return train(mnist1d, 4000, model__width=16, model__depth=3, trainer__batch_size=128, pretrain__epochs=10)


def test_default_like_training_is_exactly_healthy(healthy_curves):
    assert names(healthy_curves) == ["healthy"]
    # the reference the failure cases are measured against: a small CNN learns MNIST-1D well
    assert values(healthy_curves, "val/acc").max() > 0.85


@pytest.mark.parametrize("optimizer", [
    {"name": "sgd", "lr": 50.0},
    {"name": "adam", "lr": 1.0},
], ids=["sgd-lr50", "adam-lr1"])
def test_absurd_lr_is_too_high_or_diverged(mnist1d, optimizer):
    overrides = {f"pretrain__optimizer__{k}": v for k, v in optimizer.items()}
    # log every step: if fit raises TrainingDiverged, only the failing step is missing
    curves = train(mnist1d, 2000, pretrain__epochs=4, trainer__clip_grad_norm=None,
                   trainer__log_every_steps=1, **overrides, **NO_EARLY_STOP)
    findings = diagnose(curves, num_classes=CLASSES, stage="pretrain")
    found = {f.name for f in findings}
    assert found & {"lr_too_high", "diverged"}, [(f.name, f.evidence) for f in findings]
    # units killed by the blow-up have zero gradient: that is the lr, not a vanishing gradient
    assert "vanishing_gradients" not in found and "healthy" not in found
    # the advice names the real params key and quotes the run's peak lr (warmup may not reach 50)
    lr_finding = next(f for f in findings if f.name in ("lr_too_high", "diverged"))
    peak = f"{values(curves, 'lr').max():.2g}"
    assert f"lower `pretrain.optimizer.lr` ~10x (peak lr in this run {peak};" in lr_finding.suggestion


def test_tiny_model_underfits(mnist1d, healthy_curves):
    curves = train(mnist1d, 2000, model__arch="logreg", pretrain__epochs=5, **NO_EARLY_STOP)
    assert names(curves) == ["underfitting"]
    assert values(curves, "val/acc").max() < values(healthy_curves, "val/acc").max() - 0.3


def test_overfitting_onset_is_where_val_loss_bottoms_out(mnist1d):
    # a 3x128 MLP without dropout, weight decay or early stopping memorises 300 samples
    curves = train(mnist1d, 300, model__arch="mlp", model__width=128, model__depth=3, model__dropout=0.0,
                   pretrain__optimizer__weight_decay=0.0, pretrain__epochs=40, **NO_EARLY_STOP)
    findings = diagnose(curves, num_classes=CLASSES)
    assert [f.name for f in findings] == ["overfitting"], [(f.name, f.evidence) for f in findings]
    val = values(curves, "val/loss")
    true_onset = int(np.argmin(val)) + 1   # the diagnosis counts epochs from 1
    assert abs(findings[0].data["onset_epoch"] - true_onset) <= 2
    assert findings[0].data["final_val_loss"] > 1.1 * val.min()


@pytest.mark.parametrize(("plain", "fixed"), [
    # sigmoid: batch norm rescales each block's gradient
    ({"model__arch": "cnn1d", "model__activation": "sigmoid", "model__batchnorm": False},
     {"model__arch": "cnn1d", "model__activation": "sigmoid", "model__batchnorm": True}),
    # sigmoid, no batch norm: the residual twin's skip path carries the gradient past every
    # saturating activation (pre-activation blocks: the skip is a bare sum)
    ({"model__arch": "cnn1d", "model__activation": "sigmoid", "model__batchnorm": False},
     {"model__arch": "resnet1d", "model__activation": "sigmoid", "model__batchnorm": False}),
    # relu without batch norm: the plain stack shrinks the gradient, the residual twin does not
    ({"model__arch": "cnn1d", "model__activation": "relu", "model__batchnorm": False},
     {"model__arch": "resnet1d", "model__activation": "relu", "model__batchnorm": False}),
], ids=["sigmoid-batchnorm", "sigmoid-residual", "relu-residual"])
def test_vanishing_gradients_in_deep_plain_net_not_in_its_fixed_twin(mnist1d, plain, fixed):
    # 12 blocks: a plain relu stack's stem then gets 1e-7..1e-4 of the head's gradient (seeds 0-6)
    depth = 12
    short = {"model__depth": depth, "pretrain__epochs": 2, "trainer__layer_grad_norm_every": 5, **NO_EARLY_STOP}
    deep = diagnose(train(mnist1d, 1000, **plain, **short), num_classes=CLASSES, stage="pretrain")
    assert "vanishing_gradients" in {f.name for f in deep}
    vanishing = next(f for f in deep if f.name == "vanishing_gradients")
    assert vanishing.data["first_layer"] == "grad_norm/00_stem"
    assert vanishing.data["last_layer"] == f"grad_norm/{depth + 1:02d}_head"
    assert vanishing.data["ratio_first_last"] < 1e-3
    assert "`model.batchnorm: true`" in vanishing.suggestion
    assert "vanishing_gradients" not in names(train(mnist1d, 1000, **fixed, **short))
